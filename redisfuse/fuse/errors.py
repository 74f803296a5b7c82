"""Errors a user made (or a machine lacks): one line on stderr and an exit code."""

from __future__ import annotations

from ..errors import FormatError, FSError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MOUNTPOINT = 3
EXIT_REDIS = 4
EXIT_FUSE = 5
EXIT_FORMAT = 6


class UsageError(Exception):
    """A problem the user can fix; the CLI prints ``message`` and exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def startup_error(exc: FSError) -> UsageError:
    """The one line a user sees when the volume cannot be opened at mount time.

    An incompatible or unformatted volume exits with EXIT_FORMAT; anything else
    (Redis unreachable, refused, timing out) with EXIT_REDIS.
    """
    code = EXIT_FORMAT if isinstance(exc, FormatError) else EXIT_REDIS
    return UsageError(str(exc.strerror), code)
