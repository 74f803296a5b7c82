"""The CLI's progress helper off a terminal: periodic plain lines, or silence when asked.

(On a terminal it draws a tqdm bar: tests/cli/test_dump_load.py checks that through a
pseudo-terminal.)
"""

from __future__ import annotations

import io

from redisfuse.fuse.progress import Progress, human_bytes


def test_plain_lines_every_interval_and_at_the_end() -> None:
    out = io.StringIO()
    with Progress("load", 3 << 20, "B", stream=out, interval=0.0) as bar:
        bar.update(1 << 20, "10 inodes")
        bar.update(3 << 20, "25 inodes")
    assert out.getvalue().splitlines() == [
        "load: 1.0 MiB of 3.0 MiB, 10 inodes",
        "load: 3.0 MiB of 3.0 MiB, 25 inodes",
        "load: 3.0 MiB of 3.0 MiB, 25 inodes",
    ]


def test_lines_wait_for_the_interval_and_the_total_may_grow() -> None:
    out = io.StringIO()
    with Progress("dump", 2, "inodes", stream=out, interval=3600.0) as bar:
        for n in range(1, 6):
            bar.update(n)
    assert out.getvalue() == "dump: 5 inodes of 5 inodes\n"


def test_quiet_off_a_terminal_and_no_final_line_after_a_failure() -> None:
    out = io.StringIO()
    with Progress("fsck", None, "inodes", plain=False, stream=out, interval=0.0) as bar:
        bar.update(7)
    assert out.getvalue() == ""
    try:
        with Progress("dump", None, "inodes", stream=out, interval=3600.0) as bar:
            bar.update(1)
            raise KeyError("boom")
    except KeyError:
        pass
    assert out.getvalue() == ""


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 5 << 30, 3 << 50)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 GiB",
        "3072.0 TiB",
    ]
