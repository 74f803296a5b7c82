"""The dump file format (see docs/dump-format.md): builds and checks its records.

Pure and synchronous: no Redis, no files. A dump is a stream of JSON lines;
a ``block`` line is followed by its object's stored bytes and a newline. Every
line is encoded the same way (sorted keys, no spaces), so equal volumes give
equal bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import stat
import zlib
from dataclasses import dataclass
from typing import Any

from . import codec
from .model import MAX_NAME

DUMP_FORMAT = "redisfuse-dump"
DUMP_VERSION = 1

MAX_LINE = 16 << 20
"""Longest metadata line a load accepts (an inode's xattrs are on its line)."""

FILE_TYPES = frozenset(
    {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO}
    | {stat.S_IFSOCK}
)

INODE_INTS = ("mode", "uid", "gid", "nlink", "size", "rdev", "atime", "mtime", "ctime")
"""The integer fields of an ``inode`` record, as named in ``i:INO``."""


MAX_UUID = 64
"""Longest volume uuid a header may carry (RedisFUSE writes 32 hex digits)."""


@dataclass(frozen=True, slots=True)
class Header:
    """What a dump's first record says of the volume it holds."""

    block_size: int
    codec: str
    uuid: str | None
    """The dumped volume's uuid (None in dumps written before it was recorded): a load
    gives it to the volume it restores, which is then the same volume again."""


class DumpFormatError(ValueError):
    """A dump file is truncated, corrupt or of an unknown format; the message is one line."""


def pack_bytes(raw: bytes) -> str | dict[str, str]:
    """Binary-safe JSON for names, link targets and xattrs.

    Valid UTF-8 becomes a plain JSON string (readable, and what almost every name
    is); anything else becomes ``{"b64": "..."}``. The two never collide.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode("ascii")}


def unpack_bytes(value: object, what: str) -> bytes:
    """The bytes :func:`pack_bytes` encoded; DumpFormatError for anything else."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            pass
    raise DumpFormatError(f"{what} is neither a string nor {{'b64': ...}}")


def line(fields: dict[str, Any]) -> bytes:
    """One record as its canonical line (the same fields always give the same bytes)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8") + b"\n"


def header(block_size: int, codec_name: str, uuid: str | None = None) -> bytes:
    fields: dict[str, Any] = {
        "kind": "header",
        "format": DUMP_FORMAT,
        "version": DUMP_VERSION,
        "block_size": block_size,
        "codec": codec_name,
    }
    if uuid:
        fields["uuid"] = uuid
    return line(fields)


def block(index: int, valid: int, stored: bytes) -> bytes:
    """A block record: its line, the stored object as it is in Redis, a newline."""
    head = line(
        {
            "kind": "block",
            "index": index,
            "valid": valid,
            "length": len(stored),
            "crc32": zlib.crc32(stored),
        }
    )
    return head + stored + b"\n"


def parse(raw: bytes) -> dict[str, Any]:
    """Decode one metadata line (without judging its kind)."""
    if not raw.endswith(b"\n"):
        raise DumpFormatError("dump ends in the middle of a record (truncated)")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DumpFormatError(f"not a dump record: {raw[:60]!r}") from None
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise DumpFormatError(f"not a dump record: {raw[:60]!r}")
    return value


def integer(rec: dict[str, Any], name: str, low: int = 0) -> int:
    value = rec.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise DumpFormatError(f"{rec['kind']} record has a bad {name!r}: {value!r}")
    return value


def check_header(rec: dict[str, Any]) -> Header:
    """What a header record says; refuses other formats and versions."""
    if rec.get("kind") != "header" or rec.get("format") != DUMP_FORMAT:
        raise DumpFormatError("not a RedisFUSE dump (no redisfuse-dump header)")
    version = rec.get("version")
    if version != DUMP_VERSION:
        raise DumpFormatError(
            f"dump format version {version!r}; this RedisFUSE reads version {DUMP_VERSION}"
        )
    codec_name = rec.get("codec")
    if not isinstance(codec_name, str) or codec_name not in codec.CODECS:
        raise DumpFormatError(f"dump uses unknown codec {codec_name!r}")
    uuid = rec.get("uuid")
    if uuid is not None and (
        not isinstance(uuid, str) or not 0 < len(uuid) <= MAX_UUID or not uuid.isalnum()
    ):
        raise DumpFormatError(f"dump header has a bad uuid: {uuid!r}")
    return Header(integer(rec, "block_size", 1), codec_name, uuid)


def check_name(rec: dict[str, Any]) -> bytes:
    """The entry name of an inode or link record, checked as a directory entry."""
    name = unpack_bytes(rec.get("name"), "name")
    if not name or len(name) > MAX_NAME or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise DumpFormatError(f"bad entry name {name!r}")
    return name


def check_block(rec: dict[str, Any], block_size: int) -> tuple[int, int, int, int]:
    """(index, valid, length, crc32) of a block record's line."""
    if rec.get("kind") != "block":
        raise DumpFormatError(f"expected a block record, found {rec.get('kind')!r}")
    valid = integer(rec, "valid")
    if valid > block_size:
        raise DumpFormatError(f"block holds {valid} bytes, more than the block size")
    return integer(rec, "index"), valid, integer(rec, "length", 1), integer(rec, "crc32")


def check_object(stored: bytes, crc: int) -> None:
    """An object's bytes match its record: checksum and a codec byte this version reads."""
    if zlib.crc32(stored) != crc:
        raise DumpFormatError("block data does not match its checksum (corrupt dump)")
    if stored[0] not in codec.CODECS.values():
        raise DumpFormatError(f"block object has unknown codec byte {stored[0]}")
