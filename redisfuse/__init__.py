"""RedisFUSE: a distributed POSIX filesystem that keeps all data and metadata in Redis.

``redisfuse.backend`` is the filesystem engine, usable on its own as an asyncio
(anyio) library; ``redisfuse.fuse`` mounts it through FUSE and needs the
``fuse`` extra. This package root imports neither.
"""

__version__ = "0.1.0"
