"""File contents: round trips, holes, truncation, limits, compression, failures.

Shortcuts these tests take: sizes and the block size come from the backend's
constants; stored sizes are measured with STRLEN on the ``o:OBJ`` keys that the
``m:INO`` block map names (through ``Keys``, never by hand-formatting keys);
a corrupt object is read through the second client ``vol2`` because the
writing client keeps the objects it wrote in its cache.
"""

from __future__ import annotations

import errno
import logging
import os
import random

import pytest
from redis.asyncio import Redis

from redisfuse.backend import FSError, NotFound, Volume, codec
from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import Keys
from redisfuse.backend.model import BLOCK_SIZE, MAX_FILE_SIZE

ALSO_ON_CLUSTER = {
    "test_small_file_round_trip",
    "test_exactly_one_block_round_trip",
    "test_multi_block_round_trip",
    "test_multi_block_file_reads_back_through_another_client",
    "test_unaligned_write_round_trip",
    "test_partial_overwrite_inside_a_block",
    "test_partial_overwrite_across_a_block_boundary",
    "test_writes_crossing_the_write_buffer_limit_round_trip",
    "test_buffered_write_is_visible_before_flush_on_the_same_client",
    "test_data_at_one_tib_reads_back",
    "test_sparse_file_stores_only_written_blocks",
    "test_truncate_down_mid_block_then_extend_reads_zeros",
    "test_truncate_to_zero_empties_the_block_map",
    "test_open_wb_replaces_the_contents",
    "test_unlinked_open_file_stays_readable_through_the_handle",
}
"""The core cases, also run on the test cluster (conftest.py); the others read
object keys through the single-server layout or need a single server."""

BS = BLOCK_SIZE
TIB = 1 << 40


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible random (incompressible) bytes."""
    return random.Random(seed).randbytes(n)


def text(n: int) -> bytes:
    """``n`` bytes of varied but compressible text, like a log file."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%08d INFO request served path=/api/v1/items/%d status=200 ms=%d\n" % (
            i,
            i * 7 % 1000,
            i % 97,
        )
        i += 1
    return bytes(out[:n])


async def block_map(raw: Redis, volume_name: str, ino: int) -> dict[int, tuple[int, int]]:
    """The block map of ``ino``: block index -> (object id, valid bytes)."""
    keys = Keys(volume_name)
    entries = await raw.hgetall(keys.blockmap(ino))  # type: ignore[misc]
    out = {}
    for idx, value in entries.items():
        obj, valid = value.split(b":")
        out[int(idx)] = (int(obj), int(valid))
    return out


async def stored_objects(raw: Redis, volume_name: str, ino: int) -> list[bytes]:
    """The stored form (codec byte + payload) of every object the file references."""
    keys = Keys(volume_name)
    bmap = await block_map(raw, volume_name, ino)
    values = await raw.mget([keys.obj(obj) for obj, _ in bmap.values()])
    assert all(v is not None for v in values)
    return [bytes(v) for v in values]


async def stored_size(raw: Redis, volume_name: str, ino: int) -> int:
    """Sum of STRLEN of the objects the file references."""
    keys = Keys(volume_name)
    bmap = await block_map(raw, volume_name, ino)
    pipe = raw.pipeline(transaction=False)
    for obj, _ in bmap.values():
        pipe.strlen(keys.obj(obj))
    return sum(await pipe.execute())


async def object_ids(raw: Redis, volume_name: str) -> set[int]:
    """Ids of every ``o:OBJ`` key of the volume."""
    keys = Keys(volume_name)
    prefix = len(keys.obj(0)) - 1
    return {int(k[prefix:]) async for k in raw.scan_iter(match=keys.pattern("o"))}


# -- round trips ------------------------------------------------------------


async def test_small_file_round_trip(vol: Volume) -> None:
    await vol.write_file("/small", b"hello, world")
    assert await vol.read_file("/small") == b"hello, world"
    assert (await vol.stat("/small")).size == 12


async def test_empty_file_reads_empty(vol: Volume) -> None:
    await vol.write_file("/empty", b"")
    assert await vol.read_file("/empty") == b""
    assert (await vol.stat("/empty")).size == 0


async def test_exactly_one_block_round_trip(vol: Volume, raw: Redis, volume_name: str) -> None:
    data = pattern(BS)
    await vol.write_file("/one", data)
    attr = await vol.stat("/one")
    assert await vol.read_file("/one") == data
    assert attr.size == BS
    assert list(await block_map(raw, volume_name, attr.ino)) == [0]


async def test_multi_block_round_trip(vol: Volume, raw: Redis, volume_name: str) -> None:
    data = pattern(3 * BS + 1234)
    await vol.write_file("/multi", data)
    attr = await vol.stat("/multi")
    assert await vol.read_file("/multi") == data
    assert sorted(await block_map(raw, volume_name, attr.ino)) == [0, 1, 2, 3]


async def test_multi_block_file_reads_back_through_another_client(
    vol: Volume, vol2: Volume
) -> None:
    data = pattern(2 * BS + 99)
    await vol.write_file("/shared", data)
    assert await vol2.read_file("/shared") == data


async def test_unaligned_write_round_trip(vol: Volume) -> None:
    data = pattern(2 * BS + 777, seed=1)
    async with await vol.open("/unaligned", "wb") as f:
        await f.seek(BS - 5)
        await f.write(data)
    assert await vol.read_file("/unaligned") == bytes(BS - 5) + data


async def test_unaligned_read_spanning_blocks(vol: Volume) -> None:
    data = pattern(3 * BS)
    await vol.write_file("/f", data)
    async with await vol.open("/f") as f:
        await f.seek(BS - 10)
        assert await f.read(BS + 20) == data[BS - 10 : 2 * BS + 10]


async def test_read_past_end_is_short(vol: Volume) -> None:
    await vol.write_file("/f", b"0123456789")
    async with await vol.open("/f") as f:
        await f.seek(6)
        assert await f.read(100) == b"6789"
        assert await f.read(100) == b""


async def test_partial_overwrite_inside_a_block(vol: Volume) -> None:
    data = bytearray(pattern(BS + 500))
    await vol.write_file("/f", bytes(data))
    async with await vol.open("/f", "r+b") as f:
        await f.seek(1000)
        await f.write(b"X" * 10)
    data[1000:1010] = b"X" * 10
    assert await vol.read_file("/f") == bytes(data)
    assert (await vol.stat("/f")).size == BS + 500


async def test_partial_overwrite_across_a_block_boundary(vol: Volume, vol2: Volume) -> None:
    data = bytearray(pattern(2 * BS))
    await vol.write_file("/f", bytes(data))
    async with await vol.open("/f", "r+b") as f:
        await f.seek(BS - 3)
        await f.write(b"abcdef")
    data[BS - 3 : BS + 3] = b"abcdef"
    assert await vol2.read_file("/f") == bytes(data)


async def test_writes_crossing_the_write_buffer_limit_round_trip(vol: Volume, vol2: Volume) -> None:
    chunk = pattern(BS + 1, seed=5)  # unaligned chunks; 70 of them pass the 4 MiB buffer
    async with await vol.open("/f", "wb") as f:
        for _ in range(70):
            await f.write(chunk)
    assert await vol2.read_file("/f") == chunk * 70


async def test_buffered_write_is_visible_before_flush_on_the_same_client(vol: Volume) -> None:
    async with await vol.open("/f", "w+b") as f:
        await f.write(b"buffered")
        await f.seek(0)
        assert await f.read() == b"buffered"
        assert (await vol.stat("/f")).size == 8


# -- sparse files -------------------------------------------------------------


async def test_write_at_one_tib_reports_the_size(vol: Volume) -> None:
    async with await vol.open("/sparse", "wb") as f:
        await f.seek(TIB)
        await f.write(b"data")
    assert (await vol.stat("/sparse")).size == TIB + 4


async def test_hole_before_data_at_one_tib_reads_as_zeros(vol: Volume) -> None:
    async with await vol.open("/sparse", "wb") as f:
        await f.seek(TIB)
        await f.write(b"data")
    async with await vol.open("/sparse") as f:
        assert await f.read(BS) == bytes(BS)
        await f.seek(TIB // 2)
        assert await f.read(3 * BS) == bytes(3 * BS)


async def test_data_at_one_tib_reads_back(vol: Volume) -> None:
    async with await vol.open("/sparse", "wb") as f:
        await f.seek(TIB)
        await f.write(b"data")
    async with await vol.open("/sparse") as f:
        await f.seek(TIB)
        assert await f.read(100) == b"data"
        await f.seek(TIB - 10)
        assert await f.read(100) == bytes(10) + b"data"


async def test_sparse_file_stores_only_written_blocks(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    async with await vol.open("/sparse", "wb") as f:
        await f.seek(TIB)
        await f.write(b"data")
    attr = await vol.stat("/sparse")
    bmap = await block_map(raw, volume_name, attr.ino)
    assert list(bmap) == [TIB // BS]
    assert bmap[TIB // BS][1] == 4
    assert attr.bytes_used == 4
    assert (await vol.statfs()).bytes_used == 4


async def test_read_of_an_all_hole_file_returns_zeros(vol: Volume) -> None:
    await vol.write_file("/f", b"")
    await vol.truncate("/f", 3 * BS)
    assert await vol.read_file("/f") == bytes(3 * BS)


# -- truncate -------------------------------------------------------------------


async def test_truncate_down_mid_block_then_extend_reads_zeros(vol: Volume) -> None:
    await vol.write_file("/f", b"a" * (BS + 10_000))
    await vol.truncate("/f", BS + 100)
    await vol.truncate("/f", 3 * BS)
    expected = b"a" * (BS + 100) + bytes(3 * BS - (BS + 100))
    assert await vol.read_file("/f") == expected


async def test_truncate_down_within_first_block_then_extend_reads_zeros(
    vol: Volume, vol2: Volume
) -> None:
    await vol.write_file("/f", b"b" * 1000)
    await vol.truncate("/f", 10)
    await vol.truncate("/f", 1000)
    assert await vol.read_file("/f") == b"b" * 10 + bytes(990)
    assert await vol2.read_file("/f") == b"b" * 10 + bytes(990)


async def test_truncate_down_then_write_past_old_end_reads_zeros_between(vol: Volume) -> None:
    await vol.write_file("/f", b"c" * 5000)
    await vol.truncate("/f", 100)
    async with await vol.open("/f", "r+b") as f:
        await f.seek(4000)
        await f.write(b"Z")
    assert await vol.read_file("/f") == b"c" * 100 + bytes(3900) + b"Z"


async def test_truncate_through_an_open_handle_drops_buffered_tail(vol: Volume) -> None:
    async with await vol.open("/f", "w+b") as f:
        await f.write(b"d" * 3000)
        await f.truncate(50)
        await f.seek(0, os.SEEK_END)
        await f.write(b"!")
    assert await vol.read_file("/f") == b"d" * 50 + b"!"


async def test_truncate_down_to_a_block_boundary(vol: Volume, raw: Redis, volume_name: str) -> None:
    await vol.write_file("/f", pattern(3 * BS))
    await vol.truncate("/f", BS)
    attr = await vol.stat("/f")
    assert attr.size == BS
    assert attr.bytes_used == BS
    assert sorted(await block_map(raw, volume_name, attr.ino)) == [0]
    assert await vol.read_file("/f") == pattern(3 * BS)[:BS]


async def test_truncate_to_zero_empties_the_block_map(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    await vol.write_file("/f", pattern(2 * BS))
    await vol.truncate("/f", 0)
    attr = await vol.stat("/f")
    assert (attr.size, attr.bytes_used) == (0, 0)
    assert await block_map(raw, volume_name, attr.ino) == {}
    assert await vol.read_file("/f") == b""


async def test_truncate_up_reads_zeros_and_stores_nothing(vol: Volume) -> None:
    await vol.write_file("/f", b"abc")
    await vol.truncate("/f", 100_000)
    attr = await vol.stat("/f")
    assert attr.size == 100_000
    assert attr.bytes_used == 3
    assert await vol.read_file("/f") == b"abc" + bytes(100_000 - 3)


# -- open modes -----------------------------------------------------------------


async def test_open_wb_replaces_the_contents(vol: Volume) -> None:
    await vol.write_file("/f", pattern(3 * BS))
    await vol.write_file("/f", b"short")
    assert await vol.read_file("/f") == b"short"
    attr = await vol.stat("/f")
    assert (attr.size, attr.bytes_used) == (5, 5)


async def test_o_trunc_on_the_inode_api_truncates(vol: Volume) -> None:
    await vol.write_file("/f", b"old contents")
    attr = await vol.stat("/f")
    fh, opened = await vol.inodes.open(attr.ino, os.O_WRONLY | os.O_TRUNC)
    try:
        assert opened.size == 0
    finally:
        await vol.inodes.release(fh)
    assert await vol.read_file("/f") == b""


async def test_append_mode_adds_at_the_end(vol: Volume) -> None:
    await vol.write_file("/f", b"one")
    async with await vol.open("/f", "ab") as f:
        await f.write(b"two")
        await f.write(b"three")
    assert await vol.read_file("/f") == b"onetwothree"


async def test_append_mode_ignores_seek(vol: Volume) -> None:
    await vol.write_file("/f", b"one")
    async with await vol.open("/f", "ab") as f:
        await f.seek(0)
        await f.write(b"two")
    assert await vol.read_file("/f") == b"onetwo"


async def test_append_on_the_inode_api_ignores_the_offset(vol: Volume) -> None:
    await vol.write_file("/f", b"0123456789")
    attr = await vol.stat("/f")
    fh, _ = await vol.inodes.open(attr.ino, os.O_WRONLY | os.O_APPEND)
    try:
        await vol.inodes.write(fh, 0, b"abc")
    finally:
        await vol.inodes.release(fh)
    assert await vol.read_file("/f") == b"0123456789abc"


async def test_append_creates_a_missing_file(vol: Volume) -> None:
    async with await vol.open("/new", "ab") as f:
        await f.write(b"x")
    assert await vol.read_file("/new") == b"x"


# -- limits -------------------------------------------------------------------


async def test_write_past_max_file_size_is_efbig(vol: Volume) -> None:
    async with await vol.open("/big", "wb") as f:
        await f.seek(MAX_FILE_SIZE - 2)
        with pytest.raises(FSError) as info:
            await f.write(b"abcd")
    assert info.value.errno == errno.EFBIG
    assert (await vol.stat("/big")).size == 0


async def test_write_ending_exactly_at_max_file_size_works(vol: Volume) -> None:
    async with await vol.open("/big", "wb") as f:
        await f.seek(MAX_FILE_SIZE - 4)
        await f.write(b"last")
    async with await vol.open("/big") as f:
        await f.seek(MAX_FILE_SIZE - 4)
        assert await f.read(10) == b"last"
    assert (await vol.stat("/big")).size == MAX_FILE_SIZE


async def test_truncate_past_max_file_size_is_efbig(vol: Volume) -> None:
    await vol.write_file("/big", b"x")
    with pytest.raises(FSError) as info:
        await vol.truncate("/big", MAX_FILE_SIZE + 1)
    assert info.value.errno == errno.EFBIG
    assert (await vol.stat("/big")).size == 1


async def test_truncate_to_max_file_size_works(vol: Volume) -> None:
    await vol.write_file("/big", b"x")
    await vol.truncate("/big", MAX_FILE_SIZE)
    assert (await vol.stat("/big")).size == MAX_FILE_SIZE


async def test_read_at_negative_offset_is_einval(vol: Volume) -> None:
    await vol.write_file("/f", b"abc")
    attr = await vol.stat("/f")
    fh, _ = await vol.inodes.open(attr.ino, os.O_RDONLY)
    try:
        with pytest.raises(FSError) as info:
            await vol.inodes.read(fh, -1, 10)
    finally:
        await vol.inodes.release(fh)
    assert info.value.errno == errno.EINVAL


async def test_read_of_negative_size_is_einval(vol: Volume) -> None:
    await vol.write_file("/f", b"abc")
    attr = await vol.stat("/f")
    fh, _ = await vol.inodes.open(attr.ino, os.O_RDONLY)
    try:
        with pytest.raises(FSError) as info:
            await vol.inodes.read(fh, 0, -1)
    finally:
        await vol.inodes.release(fh)
    assert info.value.errno == errno.EINVAL


async def test_write_at_negative_offset_is_einval(vol: Volume) -> None:
    await vol.write_file("/f", b"abc")
    attr = await vol.stat("/f")
    fh, _ = await vol.inodes.open(attr.ino, os.O_WRONLY)
    try:
        with pytest.raises(FSError) as info:
            await vol.inodes.write(fh, -1, b"x")
    finally:
        await vol.inodes.release(fh)
    assert info.value.errno == errno.EINVAL
    assert await vol.read_file("/f") == b"abc"


async def test_truncate_to_negative_size_is_einval(vol: Volume) -> None:
    await vol.write_file("/f", b"abc")
    with pytest.raises(FSError) as info:
        await vol.truncate("/f", -1)
    assert info.value.errno == errno.EINVAL


async def test_seek_to_negative_position_is_einval(vol: Volume) -> None:
    await vol.write_file("/f", b"abc")
    async with await vol.open("/f") as f:
        with pytest.raises(FSError) as info:
            await f.seek(-1)
    assert info.value.errno == errno.EINVAL


# -- compression ------------------------------------------------------------------


async def test_compressible_text_is_stored_in_under_40_percent(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    data = text(1 << 20)
    await vol.write_file("/log.txt", data)
    attr = await vol.stat("/log.txt")
    stored = await stored_size(raw, volume_name, attr.ino)
    assert stored < 0.40 * len(data), f"{stored} bytes stored for {len(data)}"
    assert await vol.read_file("/log.txt") == data


async def test_random_data_is_stored_raw_within_one_percent(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    data = os.urandom(1 << 20)
    await vol.write_file("/random.bin", data)
    attr = await vol.stat("/random.bin")
    objects = await stored_objects(raw, volume_name, attr.ino)
    assert sum(len(o) for o in objects) <= 1.01 * len(data)
    assert {o[0] for o in objects} == {codec.RAW}
    assert await vol.read_file("/random.bin") == data


async def test_block_of_1_kib_is_stored_raw(vol: Volume, raw: Redis, volume_name: str) -> None:
    await vol.write_file("/f", b"a" * 1024)
    attr = await vol.stat("/f")
    (obj,) = await stored_objects(raw, volume_name, attr.ino)
    assert obj == bytes([codec.RAW]) + b"a" * 1024


async def test_block_just_over_1_kib_is_compressed(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    await vol.write_file("/f", b"a" * 1025)
    attr = await vol.stat("/f")
    (obj,) = await stored_objects(raw, volume_name, attr.ino)
    assert obj[0] == codec.ZLIB
    assert len(obj) < 100


async def test_short_tail_block_of_a_big_file_is_stored_raw(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    await vol.write_file("/f", b"a" * (BS + 10))
    attr = await vol.stat("/f")
    bmap = await block_map(raw, volume_name, attr.ino)
    tail = await raw.get(Keys(volume_name).obj(bmap[1][0]))
    assert tail == bytes([codec.RAW]) + b"a" * 10


# -- codec.py (pure functions) ---------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"x", b"a" * 1024, b"a" * 1025, text(BS), pattern(BS), pattern(100) * 655],
    ids=["empty", "one-byte", "1KiB-same", "1KiB+1-same", "text-block", "random-block", "repeats"],
)
def test_codec_round_trip(data: bytes) -> None:
    assert codec.decode(codec.encode(data)) == data


def test_codec_compresses_text() -> None:
    data = text(BS)
    stored = codec.encode(data)
    assert stored[0] == codec.ZLIB
    assert len(stored) < len(data) // 2


def test_codec_falls_back_to_raw_for_random_data() -> None:
    data = pattern(BS)
    assert codec.encode(data) == bytes([codec.RAW]) + data


def test_codec_falls_back_to_raw_when_compression_does_not_shrink() -> None:
    data = pattern(4000)  # under the probe threshold: compressed, found larger, kept raw
    assert codec.encode(data) == bytes([codec.RAW]) + data


def test_codec_raw_setting_never_compresses() -> None:
    data = b"a" * BS
    assert codec.encode(data, codec.RAW) == bytes([codec.RAW]) + data


def test_codec_unknown_codec_byte_is_corrupt() -> None:
    with pytest.raises(codec.CorruptObject, match="unknown codec byte 7"):
        codec.decode(b"\x07payload")


def test_codec_bad_zlib_payload_is_corrupt() -> None:
    with pytest.raises(codec.CorruptObject, match="zlib"):
        codec.decode(b"\x01garbage")


def test_codec_empty_object_is_corrupt() -> None:
    with pytest.raises(codec.CorruptObject):
        codec.decode(b"")


def test_codec_decode_many_returns_the_error_in_place() -> None:
    good = codec.encode(b"fine")
    out = codec.decode_many([good, b"\x09bad", good])
    assert out[0] == b"fine"
    assert isinstance(out[1], codec.CorruptObject)
    assert out[2] == b"fine"


def test_codec_encode_many_matches_encode() -> None:
    blocks = [text(5000), pattern(5000), b"tiny"]
    assert codec.encode_many(blocks, codec.ZLIB, 1) == [codec.encode(b) for b in blocks]


# -- corrupt objects ----------------------------------------------------------------


async def _corrupt_first_object(raw: Redis, volume_name: str, ino: int) -> None:
    bmap = await block_map(raw, volume_name, ino)
    await raw.set(Keys(volume_name).obj(bmap[0][0]), b"\x01garbage")


async def test_corrupt_object_read_is_eio_with_one_error_line(
    vol: Volume, vol2: Volume, raw: Redis, volume_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    await vol.write_file("/bad", text(5000))
    await _corrupt_first_object(raw, volume_name, (await vol.stat("/bad")).ino)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="redisfuse"), pytest.raises(FSError) as info:
        await vol2.read_file("/bad")
    assert info.value.errno == errno.EIO
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "corrupt" in errors[0].getMessage()


async def test_unknown_codec_byte_read_is_eio(
    vol: Volume, vol2: Volume, raw: Redis, volume_name: str
) -> None:
    await vol.write_file("/bad", b"x" * 100)
    bmap = await block_map(raw, volume_name, (await vol.stat("/bad")).ino)
    await raw.set(Keys(volume_name).obj(bmap[0][0]), b"\x42" + b"x" * 100)
    with pytest.raises(FSError) as info:
        await vol2.read_file("/bad")
    assert info.value.errno == errno.EIO


async def test_missing_object_read_is_eio(
    vol: Volume, vol2: Volume, raw: Redis, volume_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    await vol.write_file("/bad", b"x" * 100)
    ino = (await vol.stat("/bad")).ino
    bmap = await block_map(raw, volume_name, ino)
    await raw.delete(Keys(volume_name).obj(bmap[0][0]))
    with caplog.at_level(logging.ERROR, logger="redisfuse"), pytest.raises(FSError) as info:
        await vol2.read_file("/bad")
    assert info.value.errno == errno.EIO
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    # Put a readable object back so the teardown fsck finds no missing object.
    await raw.set(Keys(volume_name).obj(bmap[0][0]), codec.encode(b"x" * 100))


async def test_volume_keeps_working_after_a_corrupt_read(
    vol: Volume, vol2: Volume, raw: Redis, volume_name: str
) -> None:
    await vol.write_file("/good", b"good data")
    await vol.write_file("/bad", text(5000))
    await _corrupt_first_object(raw, volume_name, (await vol.stat("/bad")).ino)
    with pytest.raises(FSError):
        await vol2.read_file("/bad")
    assert await vol2.read_file("/good") == b"good data"
    await vol2.write_file("/new", b"new data")
    assert await vol.read_file("/new") == b"new data"
    assert sorted(await vol2.listdir("/")) == ["bad", "good", "new"]


async def test_corrupt_block_does_not_spoil_reads_of_other_blocks(
    vol: Volume, vol2: Volume, raw: Redis, volume_name: str
) -> None:
    data = text(3 * BS)
    await vol.write_file("/bad", data)
    await _corrupt_first_object(raw, volume_name, (await vol.stat("/bad")).ino)
    async with await vol2.open("/bad") as f:
        await f.seek(BS)
        assert await f.read(BS) == data[BS : 2 * BS]


# -- unlink while open --------------------------------------------------------------


async def test_unlinked_open_file_stays_readable_through_the_handle(vol: Volume) -> None:
    data = pattern(BS + 10)
    await vol.write_file("/f", data)
    async with await vol.open("/f") as f:
        await vol.remove("/f")
        with pytest.raises(NotFound):
            await vol.stat("/f")
        assert await f.read() == data


async def test_unlinked_open_file_keeps_its_usage_until_close(vol: Volume) -> None:
    before = await vol.statfs()
    data = pattern(BS + 10)
    await vol.write_file("/f", data)
    f = await vol.open("/f")
    await vol.remove("/f")
    still = await vol.statfs()
    assert (still.inodes_used, still.bytes_used) == (before.inodes_used + 1, len(data))
    await f.close()
    after = await vol.statfs()
    assert (after.inodes_used, after.bytes_used) == (before.inodes_used, before.bytes_used)


async def test_unlinked_file_data_is_deleted_after_close(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    await vol.write_file("/f", pattern(2 * BS))
    attr = await vol.stat("/f")
    objs = [obj for obj, _ in (await block_map(raw, volume_name, attr.ino)).values()]
    fh, _ = await vol.inodes.open(attr.ino, os.O_RDONLY)
    await vol.remove("/f")
    assert await vol.inodes.read(fh, 0, 10) == pattern(2 * BS)[:10]
    await vol.inodes.release(fh)
    await vol.inodes.reclaim_pending()
    keys = Keys(volume_name)
    assert not await raw.exists(keys.inode(attr.ino), keys.blockmap(attr.ino))
    assert not await raw.exists(*(keys.obj(o) for o in objs))
    assert (await fsck(raw, volume_name)).ok


async def test_write_to_an_unlinked_open_file_reads_back_then_frees(vol: Volume) -> None:
    before = await vol.statfs()
    async with await vol.open("/f", "w+b") as f:
        await vol.remove("/f")
        await f.write(b"written after unlink")
        await f.flush()
        await f.seek(0)
        assert await f.read() == b"written after unlink"
    after = await vol.statfs()
    assert (after.inodes_used, after.bytes_used) == (before.inodes_used, before.bytes_used)


async def test_unflushed_write_to_an_unlinked_file_is_freed_at_close(vol: Volume) -> None:
    before = await vol.statfs()
    f = await vol.open("/f", "wb")
    await f.write(pattern(BS + 10))
    await vol.remove("/f")
    await f.close()
    after = await vol.statfs()
    assert (after.inodes_used, after.bytes_used) == (before.inodes_used, before.bytes_used)


async def test_write_through_the_other_client_after_unlink_reads_back(
    vol: Volume, vol2: Volume
) -> None:
    await vol.write_file("/f", b"before")
    before = await vol.statfs()
    async with await vol2.open("/f", "r+b") as f:
        await vol.remove("/f")
        await f.seek(0, os.SEEK_END)
        await f.write(b" and after")
        await f.flush()
        await f.seek(0)
        assert await f.read() == b"before and after"
    after = await vol.statfs()
    assert after.inodes_used == before.inodes_used - 1
    assert after.bytes_used == before.bytes_used - len(b"before")


async def test_unlink_on_one_client_keeps_the_file_open_on_another(
    vol: Volume, vol2: Volume
) -> None:
    data = pattern(BS + 10)
    await vol.write_file("/f", data)
    before = await vol.statfs()
    f = await vol2.open("/f")
    try:
        await vol.remove("/f")
        assert not await vol2.exists("/f")
        assert await f.read() == data
        assert (await vol.statfs()).inodes_used == before.inodes_used
    finally:
        await f.close()
    after = await vol.statfs()
    assert after.inodes_used == before.inodes_used - 1
    assert after.bytes_used == before.bytes_used - len(data)


async def test_close_on_the_other_client_frees_the_data(
    vol: Volume, vol2: Volume, raw: Redis, volume_name: str
) -> None:
    await vol.write_file("/f", pattern(3 * BS))
    attr = await vol.stat("/f")
    objs = [obj for obj, _ in (await block_map(raw, volume_name, attr.ino)).values()]
    f = await vol2.open("/f")
    await vol.remove("/f")
    await f.close()
    await vol2.inodes.reclaim_pending()
    keys = Keys(volume_name)
    assert not await raw.exists(*(keys.obj(o) for o in objs))
    assert await raw.zcard(keys.orphans) == 0
    assert (await fsck(raw, volume_name)).ok


# -- statfs counters ---------------------------------------------------------------


async def map_total(raw: Redis, volume_name: str) -> int:
    """Sum of the valid bytes of every block map of the volume."""
    keys = Keys(volume_name)
    total = 0
    async for key in raw.scan_iter(match=keys.pattern("m")):
        for value in await raw.hvals(key):  # type: ignore[misc]
            total += int(value.split(b":")[1])
    return total


async def test_statfs_of_a_fresh_volume(vol: Volume) -> None:
    st = await vol.statfs()
    assert (st.inodes_used, st.bytes_used) == (1, 0)
    assert st.block_size == BS


async def test_statfs_counts_exact_after_writes_truncates_and_unlinks(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    await vol.write_file("/a", b"a" * 100)
    await vol.write_file("/b", b"b" * (BS + 4464))
    async with await vol.open("/c", "wb") as f:
        await f.seek(1 << 20)
        await f.write(b"c" * 10)
    await vol.mkdir("/d")
    st = await vol.statfs()
    assert (st.inodes_used, st.bytes_used) == (5, 100 + BS + 4464 + 10)

    await vol.truncate("/b", BS + 4)  # the second block keeps 4 valid bytes
    await vol.truncate("/c", 2 << 20)  # growing stores nothing
    async with await vol.open("/b", "r+b") as f:  # overwriting stores the same amount
        await f.write(b"B" * 10)
    await vol.remove("/a")
    st = await vol.statfs()
    assert (st.inodes_used, st.bytes_used) == (4, BS + 4 + 10)
    await vol.inodes.reclaim_pending()  # the freed block map of /a may still wait
    assert st.bytes_used == await map_total(raw, volume_name)
    report = await fsck(raw, volume_name)
    assert report.ok, str(report)
    assert report.inodes == st.inodes_used


async def test_bytes_used_counts_zeros_before_a_write_within_a_block(vol: Volume) -> None:
    async with await vol.open("/f", "wb") as f:
        await f.seek(100)
        await f.write(b"0123456789")
    assert (await vol.stat("/f")).bytes_used == 110
    assert (await vol.statfs()).bytes_used == 110


async def test_bytes_used_drops_when_a_file_is_replaced_by_rename(vol: Volume) -> None:
    await vol.write_file("/old", b"o" * 5000)
    await vol.write_file("/new", b"n" * 300)
    await vol.rename("/new", "/old")
    st = await vol.statfs()
    assert (st.inodes_used, st.bytes_used) == (2, 300)


async def test_bytes_used_unchanged_by_rewriting_the_same_block(vol: Volume) -> None:
    await vol.write_file("/f", b"x" * 1000)
    for _ in range(3):
        async with await vol.open("/f", "r+b") as f:
            await f.write(b"y" * 1000)
    assert (await vol.statfs()).bytes_used == 1000


# -- failure between storing objects and committing the block map --------------------


class InjectedFailure(RuntimeError):
    """Raised by the test hook between the object SETs and the commit."""


async def test_failure_before_commit_leaves_the_file_as_it_was(
    vol: Volume, vol2: Volume, raw: Redis, volume_name: str
) -> None:
    old = pattern(3 * BS, seed=1)
    new = pattern(2 * BS + 100, seed=2)
    await vol.write_file("/f", old)
    before = await object_ids(raw, volume_name)

    async def fail() -> None:
        raise InjectedFailure("crash between SET and commit")

    f = await vol.open("/f", "r+b")
    await f.write(new)
    vol.inodes.data.before_commit = fail
    try:
        with pytest.raises(InjectedFailure):
            await f.flush()
    finally:
        vol.inodes.data.before_commit = None

    written = await object_ids(raw, volume_name) - before
    assert len(written) == 3  # two full blocks and a 100-byte one were SET
    assert await vol2.read_file("/f") == old
    attr = await vol2.stat("/f")
    assert (attr.size, attr.bytes_used) == (len(old), len(old))

    report = await fsck(raw, volume_name)
    assert report.problems == []
    assert report.leaked_objects == sorted(written)

    # Clean up: the leaked objects go, and closing the handle commits the kept buffer.
    await raw.delete(*(Keys(volume_name).obj(o) for o in written))
    await f.close()
    assert await vol2.read_file("/f") == new + old[len(new) :]


async def test_write_behind_keeps_reads_and_sizes_right(redis_server, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    """Full buffers are committed behind the writer; reads and stat must not notice."""
    from redisfuse.backend import open_volume

    async with open_volume(
        redis_server.url, volume=volume_name, write_buffer_bytes=128 * 1024
    ) as v:
        data = pattern(1_000_000)
        async with await v.open("/f", "w+b") as f:
            for start in range(0, len(data), 100_000):
                await f.write(data[start : start + 100_000])
                assert (await v.stat("/f")).size == start + 100_000
                await f.seek(0)
                seen = await v.inodes.read(f._fh, 0, start + 100_000)
                assert seen == data[: start + 100_000]
                await f.seek(start + 100_000)
        assert await v.read_file("/f") == data


async def test_failed_commit_behind_is_reported_and_retried(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    """A commit that fails behind the writer's back is reported by the next flush,
    which commits its blocks all the same."""
    inodes = vol.inodes
    inodes.write_buffer_bytes = 64 * 1024
    data = pattern(3 * BS)
    failures = [RuntimeError("injected")]

    async def fail_once() -> None:
        if failures:
            raise failures.pop()

    inodes.data.before_commit = fail_once
    f = await vol.open("/f", "wb")
    await f.write(data[:BS])  # fills the buffer: committed behind, and fails
    await f.write(data[BS:])  # the failure waits for the flush: writes go on
    with pytest.raises(RuntimeError, match="injected"):
        await f.flush()
    inodes.data.before_commit = None
    assert await vol.read_file("/f") == data  # committed by the flush that reported
    await f.close()
    assert await vol.read_file("/f") == data
    # The failed attempt stored its objects before failing: fsck finds them as leaked.
    report = await fsck(raw, volume_name)
    assert report.leaked_objects and not report.problems
    await raw.delete(*(Keys(volume_name).obj(o) for o in report.leaked_objects))


async def test_a_replayed_commit_does_not_trash_its_own_objects(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    """redis-py retries a command whose reply was lost; the commit script may run twice."""
    keys = Keys(volume_name)
    await vol.write_file("/f", pattern(BS))
    attr = await vol.stat("/f")
    (value,) = (await raw.hgetall(keys.blockmap(attr.ino))).values()
    obj, valid = (int(x) for x in value.split(b":"))
    ctx = vol.inodes.ctx
    commit_keys = [
        keys.inode(attr.ino),
        keys.blockmap(attr.ino),
        keys.usage,
        keys.trash,
        keys.setting,
        keys.obj(obj),
    ]
    # Without a request record (another request id), the script itself still
    # recognises its own object in the map and does not trash it.
    k, a, _ = ctx.prepare("commit", commit_keys, [1, 1, BS, 0, obj, valid, "*"])
    first = await ctx.scripts.call(raw, "commit", k, a)
    assert await raw.zscore(keys.trash, str(obj)) is None
    # The same request sent again (a retry after a lost reply) is not run again:
    # it answers what the first run answered, and the version does not move.
    again = await ctx.scripts.call(raw, "commit", k, a)
    assert again == first
    assert (await vol.stat("/f")).version == int(first[2])
    assert await vol.read_file("/f") == pattern(BS)
