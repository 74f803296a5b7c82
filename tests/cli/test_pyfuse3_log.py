"""The mount's filter on pyfuse3's log: a reply nobody waits for is no error.

Shortcut: records go through a logger of the test's own with the filter
attached, as ``mount.run`` attaches it to ``pyfuse3``'s; no mount.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

pytest.importorskip("pyfuse3")

from redisfuse.fuse.mount import AbandonedReplyFilter


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, _Records]]:
    log = logging.getLogger("redisfuse-test.pyfuse3")
    handler = _Records()
    log.addHandler(handler)
    log.addFilter(AbandonedReplyFilter())
    log.propagate = False
    try:
        yield log, handler
    finally:
        log.removeHandler(handler)
        log.filters.clear()
        log.setLevel(logging.NOTSET)


def test_a_reply_the_kernel_dropped_is_debug(logger: tuple[logging.Logger, _Records]) -> None:
    log, handler = logger
    log.setLevel(logging.WARNING)  # as the mount sets pyfuse3's without --debug
    log.error("fuse_release(): fuse_reply_* failed with %s", "No such file or directory")
    assert handler.records == []
    log.setLevel(logging.DEBUG)  # --debug
    log.error("fuse_release(): fuse_reply_* failed with %s", "No such file or directory")
    [record] = handler.records
    assert record.levelname == "DEBUG"
    assert "no longer waited" in record.getMessage()


def test_other_reply_failures_stay_errors(logger: tuple[logging.Logger, _Records]) -> None:
    log, handler = logger
    log.setLevel(logging.WARNING)
    log.error("fuse_read(): fuse_reply_* failed with %s", "Invalid argument")
    log.error("fuse_setattr(): clock_gettime(CLOCK_REALTIME) failed with %s", "ENOENT")
    assert [r.levelname for r in handler.records] == ["ERROR", "ERROR"]
