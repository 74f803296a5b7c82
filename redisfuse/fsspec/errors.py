"""The fsspec frontend's one exception boundary: FSErrors become built-in OSErrors.

fsspec and its users catch the built-in classes (``FileNotFoundError`` in
``exists``, ``FileExistsError`` for mode "create", pandas' messages), which
the backend's ``FSError`` subclasses are not: each leaves as the built-in
class for its errno, with the path it concerns and the errno kept.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from ..errors import FSError

PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
"""Refusals: a read-only volume (EROFS) is one, for fsspec users as for object stores."""


def builtin_error(exc: FSError, path: str) -> OSError:
    """The built-in OSError subclass for ``exc.errno`` (FileNotFoundError, ...)."""
    code = exc.errno if exc.errno is not None else errno.EIO
    message = exc.strerror or os.strerror(code)
    if code in PERMISSION_ERRNOS:
        return PermissionError(code, message, path)
    # OSError(errno, ...) itself picks FileNotFoundError, FileExistsError,
    # IsADirectoryError, NotADirectoryError...; the rest stay OSError(errno).
    return OSError(code, message, path)


@contextlib.contextmanager
def translated(path: str) -> Iterator[None]:
    """Raise backend errors met inside the block as built-in errors about ``path``."""
    try:
        yield
    except FSError as exc:
        raise builtin_error(exc, path) from exc
