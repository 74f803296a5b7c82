"""``python -m redisfuse.bench DIR ...``: the workloads without the ``redisfuse`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
