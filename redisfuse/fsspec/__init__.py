"""fsspec support: ``redisfuse://VOLUME/path`` URLs for fsspec, pandas, dask and xarray.

Another frontend beside ``redisfuse.fuse``: it reaches a volume through the
backend's library API, without a mount, and holds no filesystem rules of its
own. It needs the ``fsspec`` extra (``pip install 'redisfuse[fsspec]'``); the
package registers the ``redisfuse`` protocol through its ``fsspec.specs``
entry point, so ``fsspec.open("redisfuse://vol/x.csv", redis_url=...)`` finds
:class:`RedisFuseFileSystem` without an import.
"""

from .filesystem import RedisFuseFileSystem

__all__ = ["RedisFuseFileSystem"]
