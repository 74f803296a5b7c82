"""Serves a RedisFUSE volume over HTTP: an asyncio (Starlette) app on the backend library.

No FUSE and no mount: the app opens the volume once, in its lifespan, runs the
session's housekeeping (``Inodes.maintain``: heartbeat, reclaim, gc) beside
the requests, and closes the volume cleanly at shutdown. Run it with::

    REDISFUSE_REDIS_URL=redis://localhost:6379/0 REDISFUSE_VOLUME=default \\
        uvicorn examples.webapp:app --port 8000

Routes (``PATH`` is a path in the volume):

- ``GET /`` (``?dir=/PATH``): a plain HTML index of a directory.
- ``GET /files/PATH``: a file, streamed block by block; ``Range: bytes=A-B``
  (one range: 206, unsatisfiable: 416), ``ETag`` from the inode number and
  its version (``If-None-Match``: 304, ``If-Range`` honoured). A directory
  answers with a JSON listing. ``HEAD`` works too.
- ``PUT /files/PATH``: a streaming upload. Missing parent directories are
  created (like object-store keys); a parent that is a file, or a target that is
  a directory, is 409. The body goes to a hidden temporary file that is renamed
  over the target at the end, so readers never see half an upload and of two
  concurrent uploads to one path the last to finish wins whole. 201 when the
  file is new, 200 when replaced.
- ``DELETE /files/PATH``: a file, or an empty directory (409 if not empty).

Configuration, from the environment: ``REDISFUSE_REDIS_URL`` (default
``redis://localhost:6379/0``), ``REDISFUSE_VOLUME`` (``default``),
``REDISFUSE_CACHE_MB`` (block cache, 64), ``REDISFUSE_READ_ONLY`` (``1``: no
PUT/DELETE, 403) and ``REDIS_PASSWORD``.

Shortcuts this example takes: no authentication; one range per request
(multipart/byteranges is not offered: a multi-range request gets the whole
file, which RFC 9110 allows); a file changed while it is being sent is sent
as the reads find it (no snapshot), like a local file read during a write; a
download cut off by the client releases its handle when the response task
ends; uploads are written as their owner-less default (mode 0644, the
server's uid/gid).
"""

from __future__ import annotations

import contextlib
import errno
import html
import mimetypes
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import quote

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from redisfuse.backend import Attr, BackendUnavailable, FSError, NotFound, Volume, open_volume

UPLOAD_PREFIX = ".upload-"
"""Temporary names of uploads in progress (hidden from listings)."""

_STATUS = {
    errno.ENOENT: 404,
    errno.ENOTDIR: 409,
    errno.EISDIR: 409,
    errno.EEXIST: 409,
    errno.ENOTEMPTY: 409,
    errno.EROFS: 403,
    errno.EACCES: 403,
    errno.EPERM: 403,
    errno.EINVAL: 400,
    errno.ENAMETOOLONG: 400,
    errno.EFBIG: 413,
    errno.ENOSPC: 507,
    errno.EDQUOT: 507,
}


@dataclass(frozen=True)
class Config:
    """Where the volume is and how to open it (from the environment by default)."""

    redis_url: str = "redis://localhost:6379/0"
    volume: str = "default"
    cache_bytes: int = 64 << 20
    read_only: bool = False

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        return cls(
            redis_url=env.get("REDISFUSE_REDIS_URL", cls.redis_url),
            volume=env.get("REDISFUSE_VOLUME", cls.volume),
            cache_bytes=int(env.get("REDISFUSE_CACHE_MB", "64")) << 20,
            read_only=env.get("REDISFUSE_READ_ONLY", "") in ("1", "true", "yes"),
        )


# -- helpers ---------------------------------------------------------------------


def _volume(request: Request) -> Volume:
    vol: Volume = request.app.state.volume
    return vol


def _path(request: Request) -> str:
    """The volume path of the request; '..' is refused rather than resolved."""
    return _path_from(request.path_params.get("path", ""))


def _path_from(raw: str) -> str:
    parts = [p for p in raw.split("/") if p and p != "."]
    if ".." in parts:
        raise FSError(errno.EINVAL, "'..' is not allowed in paths")
    return "/" + "/".join(parts)


def etag(attr: Attr) -> str:
    """Strong validator: every change to an inode bumps its version; a replaced
    file (PUT renames a new inode over it) has a new inode number."""
    return f'"{attr.ino}.{attr.version}"'


def _etag_matches(header: str, tag: str) -> bool:
    """If-None-Match semantics: ``*`` or any listed tag, compared weakly."""
    if header.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == tag for t in header.split(","))


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse one ``bytes=`` range into (start, end exclusive).

    None: the header is not one simple range and is ignored (the whole file is
    sent). ``(size, size)`` marks an unsatisfiable range (416).
    """
    m = _RANGE.match(header.replace(" ", ""))
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix: the last N bytes
        n = int(last)
        return (max(size - n, 0), size) if n > 0 and size > 0 else (size, size)
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or (last != "" and int(last) < start):
        return (size, size)
    return start, end


def _headers(attr: Attr) -> dict[str, str]:
    return {
        "ETag": etag(attr),
        "Last-Modified": formatdate(attr.mtime_ns / 1e9, usegmt=True),
        "Accept-Ranges": "bytes",
    }


async def _stream(vol: Volume, fh: int, start: int, end: int) -> AsyncIterator[bytes]:
    """Read ``[start, end)`` one block at a time (aligned to the volume's blocks)."""
    block = vol.inodes.settings.block_size
    pos = start
    try:
        while pos < end:
            size = min(block - pos % block, end - pos)
            chunk = await vol.inodes.read(fh, pos, size)
            if not chunk:
                break  # truncated meanwhile
            pos += len(chunk)
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await vol.inodes.release(fh)


def _entry(name: str, attr: Attr | None) -> dict[str, object]:
    if attr is None:
        return {"name": name}
    kind = "dir" if attr.is_dir else "symlink" if attr.is_symlink else "file"
    return {
        "name": name,
        "type": kind,
        "size": attr.size,
        "mtime": attr.mtime_ns / 1e9,
        "etag": etag(attr),
    }


async def _listing(vol: Volume, attr: Attr) -> list[dict[str, object]]:
    entries = await vol.inodes.readdir(attr.ino)
    return [
        _entry(os.fsdecode(e.name), e.attr)
        for e in entries
        if not e.name.startswith(UPLOAD_PREFIX.encode())
    ]


# -- endpoints ---------------------------------------------------------------------


async def index(request: Request) -> Response:
    """A plain HTML page listing a directory (``?dir=``), with links."""
    vol = _volume(request)
    path = _path_from(request.query_params.get("dir", "/"))
    attr = await vol.stat(path)
    if not attr.is_dir:
        raise FSError(errno.ENOTDIR, f"{path} is not a directory")
    rows = []
    base = path.rstrip("/")
    for entry in await _listing(vol, attr):
        name = str(entry["name"])
        full = f"{base}/{name}"
        if entry.get("type") == "dir":
            href, label = f"/?dir={quote(full)}", name + "/"
        else:
            href, label = f"/files{quote(full)}", name
        size = entry.get("size", "")
        rows.append(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a> {size}</li>')
    title = html.escape(f"{vol.name}:{path}")
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1><ul>{''.join(rows)}</ul></body></html>"
    )
    return HTMLResponse(body)


async def get_file(request: Request) -> Response:
    """A file (whole, or one range) streamed by block; a directory as JSON."""
    vol = _volume(request)
    path = _path(request)
    attr = await vol.stat(path)
    if attr.is_dir:
        return JSONResponse({"path": path, "entries": await _listing(vol, attr)})
    if not attr.is_reg:
        raise FSError(errno.EINVAL, f"{path} is not a regular file")
    inm = request.headers.get("if-none-match")
    if inm is not None and _etag_matches(inm, etag(attr)):
        return Response(status_code=304, headers=_headers(attr))
    # The attributes the open returns are the ones the reads start from.
    fh, attr = await vol.inodes.open(attr.ino, os.O_RDONLY)
    try:
        headers = _headers(attr)
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        start, end, status = 0, attr.size, 200
        ranged = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if ranged is not None and (if_range is None or if_range.strip() == etag(attr)):
            parsed = byte_range(ranged, attr.size)
            if parsed == (attr.size, attr.size):
                headers["Content-Range"] = f"bytes */{attr.size}"
                await vol.inodes.release(fh)
                return Response(status_code=416, headers=headers)
            if parsed is not None:
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{attr.size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            await vol.inodes.release(fh)
            return Response(status_code=status, headers=headers, media_type=content_type)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await vol.inodes.release(fh)
        raise
    return StreamingResponse(
        _stream(vol, fh, start, end), status_code=status, headers=headers, media_type=content_type
    )


async def put_file(request: Request) -> Response:
    """Stream the body into a hidden file beside the target, then rename it over."""
    vol = _volume(request)
    path = _path(request)
    if path == "/":
        raise FSError(errno.EISDIR, "cannot PUT the root directory")
    parent_path, _, name = path.rpartition("/")
    parent_path = parent_path or "/"
    try:
        old: Attr | None = await vol.stat(path)
    except NotFound:
        old = None
    if old is not None and old.is_dir:
        raise FSError(errno.EISDIR, f"{path} is a directory")
    await vol.makedirs(parent_path, exist_ok=True)
    parent = await vol.stat(parent_path)
    temp = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}.{name}"[:255].encode()
    fh, attr = await vol.inodes.create(parent.ino, temp, 0o644, os.O_WRONLY, vol.uid, vol.gid)
    renamed = False
    try:
        offset = 0
        try:
            async for chunk in request.stream():
                if chunk:
                    offset += await vol.inodes.write(fh, offset, chunk)
        finally:
            with anyio.CancelScope(shield=True):
                await vol.inodes.release(fh)  # commits what was buffered
        await vol.inodes.rename(parent.ino, temp, parent.ino, name.encode())
        renamed = True
    finally:
        if not renamed:
            with anyio.CancelScope(shield=True), contextlib.suppress(FSError):
                await vol.inodes.unlink(parent.ino, temp)
    attr = await vol.stat(path)
    return JSONResponse(
        {"path": path, "size": attr.size, "etag": etag(attr)},
        status_code=201 if old is None else 200,
        headers={"ETag": etag(attr)},
    )


async def delete_file(request: Request) -> Response:
    vol = _volume(request)
    path = _path(request)
    if path == "/":
        raise FSError(errno.EBUSY, "cannot delete the root directory")
    attr = await vol.stat(path, follow_symlinks=False)
    if attr.is_dir:
        await vol.rmdir(path)
    else:
        await vol.remove(path)
    return Response(status_code=204)


def _read_only(request: Request) -> None:
    if request.app.state.config.read_only:
        raise FSError(errno.EROFS, "this server is read-only")


async def files(request: Request) -> Response:
    if request.method in ("GET", "HEAD"):
        return await get_file(request)
    _read_only(request)
    if request.method == "PUT":
        return await put_file(request)
    return await delete_file(request)


async def fs_error(request: Request, exc: Exception) -> Response:
    """FSErrors become HTTP statuses (errno to status), with the message as JSON."""
    assert isinstance(exc, FSError)
    if isinstance(exc, BackendUnavailable):
        status = 503
    else:
        status = _STATUS.get(exc.errno or 0, 500)
    return JSONResponse({"error": exc.strerror, "errno": exc.errno}, status_code=status)


# -- the app -------------------------------------------------------------------------


def create_app(config: Config | None = None) -> Starlette:
    """The app for ``config`` (read from the environment when the app starts if None)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        cfg = config or Config.from_env()
        async with open_volume(
            cfg.redis_url,
            volume=cfg.volume,
            password=os.environ.get("REDIS_PASSWORD"),
            read_only=cfg.read_only,
            cache_bytes=cfg.cache_bytes,
            mountpoint="http",
        ) as vol:
            app.state.volume = vol
            app.state.config = cfg
            async with anyio.create_task_group() as tasks:
                # Heartbeat: without it other nodes would take this long-lived
                # session for dead and reclaim the files it has open.
                tasks.start_soon(vol.inodes.maintain)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()

    return Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/files", files, methods=["GET", "HEAD"]),
            Route("/files/{path:path}", files, methods=["GET", "HEAD", "PUT", "DELETE"]),
        ],
        lifespan=lifespan,
        exception_handlers={FSError: fs_error},
    )


app = create_app()
