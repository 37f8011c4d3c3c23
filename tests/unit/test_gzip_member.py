"""The gzip member Hoist writes: any gzip reader takes it, isal's bytes where everything
compresses, stored blocks where nothing does, and the same bytes for the same input."""

from __future__ import annotations

import gzip
import random
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib

from engine.push.gzip_member import PROBE_BYTES, PROBE_WINDOWS, GzipMember, incompressible

CHUNK = 1 << 20
TEXT = b"".join(b"line %d of a layer, %x\n" % (i, i * 7919 % 65521) for i in range(100_000))


def _noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _member(chunks: list[bytes], level: int = 3) -> bytes:
    member = GzipMember(level)
    return b"".join([*(member.compress(chunk) for chunk in chunks), member.flush()])


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


def test_a_layer_that_compresses_throughout_is_isal_gzip_byte_for_byte() -> None:
    compressor = isal_zlib.compressobj(3, isal_zlib.DEFLATED, 31)
    isal = b"".join([*(compressor.compress(c) for c in _pieces(TEXT)), compressor.flush()])
    assert _member(_pieces(TEXT)) == isal


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


def test_an_empty_member_is_valid() -> None:
    assert gzip.decompress(_member([])) == b""


kinds = st.sampled_from(["noise", "text", "zeros"])


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(kinds, st.integers(0, CHUNK), st.integers(0, 2**16)), max_size=6),
    st.integers(0, 3),
)
def test_any_mix_of_chunks_reads_back_and_is_deterministic(
    specs: list[tuple[str, int, int]], level: int
) -> None:
    chunks = [
        _noise(size, seed) if kind == "noise" else TEXT[:size] if kind == "text" else bytes(size)
        for kind, size, seed in specs
    ]
    member = _member(chunks, level)
    assert gzip.decompress(member) == b"".join(chunks)
    assert _member(chunks, level) == member
