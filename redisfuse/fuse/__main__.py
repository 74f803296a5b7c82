"""``python -m redisfuse.fuse MOUNTPOINT``: mount a volume in the foreground."""

import sys

from .cli import fuse_main

sys.exit(fuse_main())
