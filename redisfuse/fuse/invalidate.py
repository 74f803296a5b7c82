"""Keeps the kernel's caches coherent with other nodes' changes.

Runs beside the FUSE loop: for each change event from the backend it tells the
kernel to drop what it cached (attributes and page cache of an inode, or one
directory entry). After ``Resync`` (events may have been lost) it drops every
inode the kernel knows of. ``invalidate_inode`` blocks until the kernel is done,
so it runs in a worker thread, never in the event loop that serves requests.
Written with anyio: the same code runs on trio, asyncio and uvloop.
"""

from __future__ import annotations

import logging
from collections import Counter

import anyio
import pyfuse3
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..backend import Inodes
from ..backend.events import EntryChanged, InodeChanged, Resync
from .boundary import Boundary

log = logging.getLogger(__name__)


def _drop_inode(ino: int) -> None:
    try:
        pyfuse3.invalidate_inode(pyfuse3.InodeT(ino), attr_only=False)
    except OSError:
        pass  # the kernel already forgot it


class KernelInvalidator:
    """Listens to the backend's events and invalidates the kernel's caches."""

    def __init__(self, fs: Inodes, boundary: Boundary, known: Counter[int]) -> None:
        self.fs = fs
        self.boundary = boundary
        self.known = known
        """Lookup counts of the inodes the kernel holds (kept by Operations)."""
        self.events = 0
        self.resyncs = 0
        self.inode_invalidations = 0
        self.entry_invalidations = 0

    def __repr__(self) -> str:
        return (
            f"<KernelInvalidator events={self.events} resyncs={self.resyncs} "
            f"invalidated inodes={self.inode_invalidations} entries={self.entry_invalidations}>"
        )

    async def run(self) -> None:
        """Consume events until cancelled.

        Entry invalidations are queued to pyfuse3's notification thread at once;
        inode invalidations (which block until the kernel is done) go to a worker
        task, so a slow one never delays the events behind it.
        """
        send, receive = anyio.create_memory_object_stream[int](100_000)
        async with send, receive, anyio.create_task_group() as tasks:
            tasks.start_soon(self._drop_inodes, receive)
            while True:
                try:
                    await self._consume(send)
                except Exception:
                    # The event stream reconnects by itself; anything else is a bug,
                    # which must not end the mount: log it, drop what the kernel
                    # holds, and listen again.
                    log.exception("change event stream failed; restarting it")
                    for ino in list(self.known):
                        send.send_nowait(ino)
                    await anyio.sleep(1.0)

    async def _consume(self, send: MemoryObjectSendStream[int]) -> None:
        async for event in self.boundary.iterate(self.fs.events()):
            self.events += 1
            if isinstance(event, EntryChanged):
                self.entry_invalidations += 1
                pyfuse3.invalidate_entry_async(
                    pyfuse3.InodeT(event.parent), event.name, ignore_enoent=True
                )
            elif isinstance(event, InodeChanged):
                if event.ino in self.known:
                    send.send_nowait(event.ino)
            elif isinstance(event, Resync):
                self.resyncs += 1
                if self.resyncs > 1:
                    log.info("change events resumed; dropping %d cached inodes", len(self.known))
                for ino in list(self.known):
                    send.send_nowait(ino)

    async def _drop_inodes(self, receive: MemoryObjectReceiveStream[int]) -> None:
        async for ino in receive:
            # Abandoned on cancellation: at unmount a kernel notification may never
            # return, and the mount must still finish (the thread dies with it).
            await anyio.to_thread.run_sync(_drop_inode, ino, abandon_on_cancel=True)
            self.inode_invalidations += 1
