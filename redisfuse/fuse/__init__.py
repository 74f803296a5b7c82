"""The FUSE frontend: mounts a RedisFUSE volume with pyfuse3 on trio.

It translates kernel requests into backend calls through trio-asyncio and
holds no filesystem logic of its own (that lives in ``redisfuse.backend``).
Needs the ``fuse`` extra: ``pip install 'redisfuse[fuse]'``.
"""
