"""The FUSE frontend: mounts a RedisFUSE volume with pyfuse3 on trio, asyncio or uvloop.

It translates kernel requests into backend calls (through trio-asyncio on
trio, directly on asyncio and uvloop) and holds no filesystem logic of its own
(that lives in ``redisfuse.backend``). Needs the ``fuse`` extra:
``pip install 'redisfuse[fuse]'``.
"""
