"""Running the ``redisfuse`` command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def redisfuse(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``redisfuse ARGS`` (status, fsck, gc, acl) and capture its output."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from redisfuse.fuse.cli import main; sys.exit(main())",
         *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
