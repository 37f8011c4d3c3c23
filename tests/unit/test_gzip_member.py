"""The gzip member Hoist writes: any gzip reader takes it, its blocks made apart (on several
threads) come out as one stream would refer back, stored blocks where nothing compresses, and
the same bytes for the same input however it is fed and however many threads make it."""

from __future__ import annotations

import gzip
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib

from engine import offload
from engine.push.gzip_member import (
    BLOCK_SIZE,
    PROBE_BYTES,
    PROBE_WINDOWS,
    STORE_ABOVE,
    GzipMember,
    deflate_block,
    incompressible,
)

CHUNK = BLOCK_SIZE
TEXT = b"".join(b"line %d of a layer, %x\n" % (i, i * 7919 % 65521) for i in range(100_000))


def _noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _member(chunks: list[bytes], level: int = 3) -> bytes:
    member = GzipMember(level)
    return b"".join([*(member.compress(chunk) for chunk in chunks), member.flush()])


def _finished(chunks: list[bytes], level: int = 3) -> bytes:
    """The member made as a push makes it: the last chunk through ``finish``."""
    member = GzipMember(level)
    *head, last = chunks or [b""]
    return b"".join([*(member.compress(chunk) for chunk in head), member.finish(last)])


def _pieces(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _leading_stored_blocks(member: bytes) -> int:
    """How many stored blocks open the member's deflate stream, walked header by header (a
    stored block is 0x00, then LEN and its complement, then LEN bytes)."""
    body, position, stored = member[10:-8], 0, 0
    while body[position : position + 1] == b"\0":
        length = int.from_bytes(body[position + 1 : position + 3], "little")
        complement = int.from_bytes(body[position + 3 : position + 5], "little")
        if length == 0 or length ^ 0xFFFF != complement:
            break
        stored += 1
        position += 5 + length
    return stored


def test_a_block_is_isal_deflate_primed_with_the_bytes_before_it() -> None:
    """Each block is what isal makes of it alone, given the window before it: so blocks made
    on other threads join into the stream one compressor would refer back through."""
    data, window = TEXT[: CHUNK + CHUNK // 2], 32 << 10
    first = isal_zlib.compressobj(3, isal_zlib.DEFLATED, -15)
    second = isal_zlib.compressobj(3, isal_zlib.DEFLATED, -15, zdict=data[CHUNK - window : CHUNK])
    expected = [
        first.compress(data[:CHUNK]) + first.flush(isal_zlib.Z_SYNC_FLUSH),
        second.compress(data[CHUNK:]) + second.flush(isal_zlib.Z_FINISH),
    ]
    member = _member(_pieces(data))
    assert member[10:-8] == b"".join(expected)
    assert gzip.decompress(member) == data


def test_blocks_cost_almost_nothing_against_one_stream() -> None:
    """Priming each block with the window before it keeps what one stream would find."""
    stream = isal_zlib.compressobj(3, isal_zlib.DEFLATED, 31)
    one = stream.compress(TEXT) + stream.flush()
    assert len(_member(_pieces(TEXT))) < len(one) * 1.002


def test_the_same_bytes_on_one_thread_or_several(monkeypatch: pytest.MonkeyPatch) -> None:
    data = TEXT + _noise(CHUNK, 7) + TEXT[:CHUNK]
    several = _member(_pieces(data, 4 * CHUNK))
    monkeypatch.setattr(offload, "CPU_THREADS", 1)
    assert _member(_pieces(data, 4 * CHUNK)) == several


def test_the_last_block_is_final_whether_stored_or_deflated() -> None:
    assert deflate_block(b"", b"", 3, last=True) == isal_zlib.compressobj(3, 8, -15).flush()
    noise = _noise(CHUNK, 8)
    assert zlib.decompress(deflate_block(noise, b"", 3, last=True), -15) == noise


def test_random_bytes_are_stored_and_read_back() -> None:
    noise = _noise(3 * CHUNK, 1)
    member = _member(_pieces(noise))
    assert gzip.decompress(member) == noise
    # The stored blocks' headers: 5 bytes per 64 KiB, the header and trailer 18 bytes.
    assert len(member) < len(noise) * 1.0001 + 18
    assert _leading_stored_blocks(member) == 3 * -(-CHUNK // 0xFFFF)


def test_stored_and_deflated_chunks_interleave() -> None:
    chunks = [TEXT[:CHUNK], _noise(CHUNK, 2), TEXT[CHUNK : 2 * CHUNK], _noise(CHUNK // 2, 3)]
    member = _member(chunks)
    assert gzip.decompress(member) == b"".join(chunks)
    assert zlib.decompress(member, 31) == b"".join(chunks)


def test_the_probe_looks_across_the_chunk_not_at_its_start() -> None:
    """A chunk that starts with noise but compresses further on is deflated."""
    chunk = _noise(PROBE_BYTES * 2, 4) + TEXT[: CHUNK - PROBE_BYTES * 2]
    assert not incompressible(chunk)
    assert incompressible(_noise(CHUNK, 5))
    assert not incompressible(_noise(PROBE_WINDOWS * PROBE_BYTES - 1, 6)), "too small to probe"


def test_text_between_packed_files_is_deflated() -> None:
    """A block of noise with a stretch of text inside (a text file between packed ones, as in
    /usr/share's tar) is deflated: it comes out smaller than stored. Four probes of 16 KiB,
    one every 256 KiB, saw only the noise and stored it."""
    text = 192 << 10
    chunk = _noise(32 << 10, 7) + TEXT[:text] + _noise(CHUNK - (32 << 10) - text, 8)
    assert not incompressible(chunk)
    assert len(deflate_block(chunk, b"", 3, last=False)) < 0.9 * len(chunk)


def test_an_empty_member_is_valid() -> None:
    assert gzip.decompress(_member([])) == b""


kinds = st.sampled_from(["noise", "text", "zeros"])


def _bytes(kind: str, size: int, seed: int) -> bytes:
    if kind == "noise":
        return _noise(size, seed)
    return TEXT[seed : seed + size] if kind == "text" else bytes(size)


def _every_window_says_store(block: bytes) -> bool:
    """The probe's verdict the long way: all its windows deflated, whatever the first ones say."""
    stride = len(block) // PROBE_WINDOWS
    windows = [block[n * stride : n * stride + PROBE_BYTES] for n in range(PROBE_WINDOWS)]
    packed = sum(len(isal_zlib.compress(window, 1, -15)) for window in windows)
    return packed > STORE_ABOVE * PROBE_WINDOWS * PROBE_BYTES


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(kinds, st.integers(1, PROBE_BYTES * 4), st.integers(0, 2**16)), max_size=40)
)
def test_the_probe_stops_early_only_where_the_rest_cannot_change_its_verdict(
    specs: list[tuple[str, int, int]],
) -> None:
    block = b"".join(_bytes(kind, size, seed) for kind, size, seed in specs)
    block = (block + _noise(CHUNK, len(specs)))[:CHUNK]  # whole blocks, noise to fill
    assert incompressible(block) == _every_window_says_store(block)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(kinds, st.integers(0, CHUNK), st.integers(0, 2**16)), max_size=6),
    st.integers(0, 3),
    st.integers(512, 3 * CHUNK),
)
def test_any_mix_reads_back_and_is_the_same_however_it_is_fed(
    specs: list[tuple[str, int, int]], level: int, piece: int
) -> None:
    chunks = [_bytes(kind, size, seed) for kind, size, seed in specs]
    data = b"".join(chunks)
    member = _member(chunks, level)
    assert gzip.decompress(member) == data
    assert zlib.decompress(member, 31) == data
    assert _member(_pieces(data, piece), level) == member
    assert _finished(_pieces(data, piece), level) == member


@pytest.mark.parametrize("data", [TEXT[: 2 * CHUNK], _noise(CHUNK, 5)], ids=["text", "noise"])
def test_finish_makes_what_compress_and_flush_make_even_on_a_block_boundary(data: bytes) -> None:
    """A tar that ends on a block's end: its last whole block is not the final one, the empty
    block after it is, whether the end came through ``finish`` or ``flush``."""
    assert _finished([data]) == _member([data])
    assert _finished(_pieces(data)) == _member(_pieces(data))
