"""Keeps the kernel's caches coherent with other nodes' changes.

Runs beside the FUSE loop: for each change event from the backend it tells the
kernel to drop what it cached (attributes and page cache of an inode, or one
directory entry). After ``Resync`` (events may have been lost) it drops every
inode the kernel knows of. ``invalidate_inode`` blocks until the kernel is done,
so it runs in a worker thread, never in the event loop that serves requests.
Entry invalidations go, in order, to a thread of our own (``EntryNotifier``)
rather than to pyfuse3's ``invalidate_entry_async``: pyfuse3 does not wait for
its thread before it destroys the session at unmount, so invalidations still
queued then failed (logged as errors with tracebacks) or used a freed session.
Written with anyio: the same code runs on trio, asyncio and uvloop.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
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


NOTIFIER_DRAIN_S = 5.0
"""How long unmount waits for queued entry invalidations (they fail fast once unmounted)."""


class EntryNotifier:
    """Sends entry invalidations to the kernel from one thread, in the order queued.

    ``invalidate_entry`` blocks while a related request is in progress, hence the
    thread. Once the kernel has ended the connection (unmounted) every write to it
    fails with ENODEV: those are expected and logged at DEBUG. ``aclose`` waits for
    the thread, so that nothing touches the FUSE session after pyfuse3 closes it.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="redisfuse-invalidate-entry", daemon=True
        )
        self._thread.start()

    def put(self, parent: int, name: bytes) -> None:
        self._queue.put((parent, name))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            parent, name = item
            try:
                pyfuse3.invalidate_entry(pyfuse3.InodeT(parent), name)
            except FileNotFoundError:
                pass  # the kernel does not know the entry
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    log.debug("entry %r of %d not invalidated: unmounted", name, parent)
                else:
                    log.error("could not invalidate entry %r of inode %d: %s", name, parent, exc)

    async def aclose(self) -> None:
        """Let the thread send what is queued and end (waiting at most NOTIFIER_DRAIN_S)."""
        self._queue.put(None)
        with anyio.CancelScope(shield=True), anyio.move_on_after(NOTIFIER_DRAIN_S):
            await anyio.to_thread.run_sync(self._thread.join, abandon_on_cancel=True)


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

        Entry invalidations are queued to the EntryNotifier's thread at once;
        inode invalidations (which block until the kernel is done) go to a worker
        task, so a slow one never delays the events behind it.
        """
        send, receive = anyio.create_memory_object_stream[int](100_000)
        entries = EntryNotifier()
        try:
            async with send, receive, anyio.create_task_group() as tasks:
                tasks.start_soon(self._drop_inodes, receive)
                while True:
                    try:
                        await self._consume(send, entries)
                    except Exception:
                        # The event stream reconnects by itself; anything else is a bug,
                        # which must not end the mount: log it, drop what the kernel
                        # holds, and listen again.
                        log.exception("change event stream failed; restarting it")
                        for ino in list(self.known):
                            send.send_nowait(ino)
                        await anyio.sleep(1.0)
        finally:
            await entries.aclose()

    async def _consume(self, send: MemoryObjectSendStream[int], entries: EntryNotifier) -> None:
        async for event in self.boundary.iterate(self.fs.events()):
            self.events += 1
            if isinstance(event, EntryChanged):
                self.entry_invalidations += 1
                entries.put(event.parent, event.name)
            elif isinstance(event, InodeChanged):
                if event.ino in self.known:
                    send.send_nowait(event.ino)
            elif isinstance(event, Resync):  # Stalled too: events may be missing
                # (the backend logs the gap and its end, once each)
                self.resyncs += 1
                log.debug("change events resynced; dropping %d cached inodes", len(self.known))
                for ino in list(self.known):
                    send.send_nowait(ino)

    async def _drop_inodes(self, receive: MemoryObjectReceiveStream[int]) -> None:
        async for ino in receive:
            # Abandoned on cancellation: at unmount a kernel notification may never
            # return, and the mount must still finish (the thread dies with it).
            await anyio.to_thread.run_sync(_drop_inode, ino, abandon_on_cancel=True)
            self.inode_invalidations += 1
