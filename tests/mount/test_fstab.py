"""mount(8) with an fstab line of type fuse.redisfuse, through the real mount.fuse3.

The test writes its own fstab (``mount -T FILE``) pointing at the session's
redis-server. libmount starts mount helpers without PATH, so mount.fuse3's
``sh -c "redisfuse ..."`` finds ``redisfuse`` only in the shell's default path:
the test links this checkout's ``redisfuse`` into /usr/local/sbin (the one
command the README tells users to run) and removes the link afterwards.
Shortcut: it needs root (mount(8) with an fstab file) and skips otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from redisfuse.backend import open_volume

from ..conftest import RedisServer
from . import mounting
from .mounting import is_mounted

HELPER_LINK = Path("/usr/local/sbin/redisfuse")
MOUNT_FUSE3 = "/sbin/mount.fuse3"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "mount -T needs root"
    if not (os.path.exists(MOUNT_FUSE3) or shutil.which("mount.fuse3")):
        return "mount.fuse3 is not installed (apt install fuse3)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not installed"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture
def helper() -> Iterator[Path]:
    """``redisfuse`` where mount.fuse3's shell finds it, for this test only."""
    ours = Path(sys.executable).parent / "redisfuse"
    if not ours.exists():
        pytest.skip(f"{ours} is not installed (pip install -e .)")
    if os.path.lexists(HELPER_LINK):
        if HELPER_LINK.resolve() != ours.resolve():
            pytest.skip(f"{HELPER_LINK} is another installation ({HELPER_LINK.resolve()})")
        yield HELPER_LINK
        return
    HELPER_LINK.symlink_to(ours)
    try:
        yield HELPER_LINK
    finally:
        HELPER_LINK.unlink()


def _daemons(mountpoint: Path) -> list[int]:
    """Pids of processes whose command line names the mountpoint."""
    needle = str(mountpoint).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def test_mount_by_fstab_line(
    helper: Path, redis_server: RedisServer, volume_name: str, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "mount.log"
    options = ["_netdev", "noauto", f"log={log}", "session_timeout=20"]
    if mounting.EVENT_LOOP is not None:
        options.append(f"event_loop={mounting.EVENT_LOOP}")
    source = f"redis://{redis_server.host}:{redis_server.port}/{volume_name}"
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{source} {mnt} fuse.redisfuse {','.join(options)} 0 0\n")
    try:
        done = subprocess.run(
            ["mount", "-T", str(fstab), str(mnt)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{done.stderr}\n{log.read_text() if log.exists() else ''}"
        # mount returned: the filesystem is already there, served from the background.
        assert is_mounted(mnt)
        with open("/proc/mounts", encoding="utf-8") as mounts:
            line = next(m for m in mounts if f" {mnt} " in m)
        assert line.split()[2] == "fuse.redisfuse"
        assert _daemons(mnt), "no filesystem process left running"

        (mnt / "dir").mkdir()
        (mnt / "dir" / "hello.txt").write_bytes(b"through fstab\n")
        assert (mnt / "dir" / "hello.txt").read_bytes() == b"through fstab\n"

        async def read_back() -> bytes:
            async with open_volume(redis_server.url, volume=volume_name) as vol:
                return await vol.read_file("/dir/hello.txt")

        assert asyncio.run(read_back()) == b"through fstab\n"

        umount = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=60)
        assert umount.returncode == 0, umount.stderr
        deadline = time.monotonic() + 20
        while _daemons(mnt):
            assert time.monotonic() < deadline, "the filesystem process outlived its unmount"
            time.sleep(0.05)
        text = log.read_text()
        assert "unmounted" in text
        if mounting.EVENT_LOOP is not None:
            assert f"on the {mounting.EVENT_LOOP} event loop" in text
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
        for pid in _daemons(mnt):
            os.kill(pid, 9)


def test_mount_a_again_leaves_one_mount(
    helper: Path, redis_server: RedisServer, volume_name: str, tmp_path: Path
) -> None:
    """``mount -a`` skips a line that is mounted already: /proc/mounts names the
    mount by the line's source (a second mount of the same volume would stack)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "mount.log"
    source = f"{volume_name}@{redis_server.host}:{redis_server.port}"
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{source} {mnt} fuse.redisfuse log={log},session_timeout=20 0 0\n")

    def mounts_at_mnt() -> list[str]:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            return [m for m in mounts if f" {mnt} " in m]

    try:
        for _ in range(2):
            done = subprocess.run(
                ["mount", "-a", "-T", str(fstab)], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, f"{done.stderr}\n{log.read_text() if log.exists() else ''}"
        lines = mounts_at_mnt()
        assert len(lines) == 1, lines
        assert lines[0].split()[0] == source
        assert len(_daemons(mnt)) == 1
        umount = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=60)
        assert umount.returncode == 0, umount.stderr
        assert not mounts_at_mnt()
    finally:
        while is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
        deadline = time.monotonic() + 20
        while _daemons(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in _daemons(mnt):
            os.kill(pid, 9)
