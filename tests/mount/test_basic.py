"""The mount works at all: write, read, list, stat, remove through os.*."""

from __future__ import annotations

import os
from pathlib import Path


def test_write_read_list(work: Path) -> None:
    (work / "hello.txt").write_bytes(b"hello world\n")
    assert (work / "hello.txt").read_bytes() == b"hello world\n"
    assert os.listdir(work) == ["hello.txt"]
    assert os.stat(work / "hello.txt").st_size == 12


def test_remove(work: Path) -> None:
    (work / "x").write_bytes(b"x")
    os.remove(work / "x")
    assert os.listdir(work) == []
