"""A gzip member that stores what does not compress: isal's deflate, with stored blocks between.

Layers often hold bytes that are already compressed (archives, images, packed weights) or random.
Deflating them costs isal's full speed (about 350 MiB/s at level 3 here) to write about the same
bytes again (100.05 %); storing them costs a copy and a CRC (gigabytes per second) and writes
100.01 %. So each chunk of the tar is first *probed*: a few small windows across it are deflated
at isal's fastest level, and a chunk they barely shrink is stored, in deflate's own stored
blocks, where every gzip reader takes it. Any other chunk goes through one isal stream, so a
layer that compresses throughout comes out byte for byte as isal's own gzip would make it.

Deterministic: the choice depends on the chunk's bytes alone, and so does what each choice
writes. Before a stored chunk the isal stream is fully flushed (byte-aligned, history dropped),
so nothing deflated afterwards refers back into bytes it did not see.
"""

from __future__ import annotations

import struct

from isal import isal_zlib

#: The member's header as isal writes it: deflate, no flags, mtime 0, no extra flags, OS unknown.
_HEADER = bytes.fromhex("1f8b08000000000000ff")
_RAW_DEFLATE = -15
#: A stored block holds at most this many bytes (its length is 16 bits).
_STORED_MAX = 0xFFFF
#: Windows deflated to probe a chunk, and the size of each: spread so that a chunk is stored only
#: when it is incompressible throughout, not merely where it starts.
PROBE_WINDOWS = 4
PROBE_BYTES = 16 << 10
#: A chunk whose windows deflate to more than this share of their size is stored. Data this
#: dense gains at most a few percent at level 3, for about ten times the CPU of the copy.
STORE_ABOVE = 0.97


def incompressible(chunk: bytes | memoryview) -> bool:
    """Whether deflating ``chunk`` would barely shrink it, judged from a few windows of it."""
    if len(chunk) < PROBE_WINDOWS * PROBE_BYTES:
        return False  # small chunks: probing would cost what compressing costs
    view = memoryview(chunk)
    stride = len(view) // PROBE_WINDOWS
    probed = packed = 0
    for n in range(PROBE_WINDOWS):
        window = view[n * stride : n * stride + PROBE_BYTES]
        probed += len(window)
        packed += len(isal_zlib.compress(window, 1, _RAW_DEFLATE))
    return packed > STORE_ABOVE * probed


def stored_blocks(chunk: bytes) -> list[bytes | memoryview]:
    """``chunk`` as non-final stored blocks, in pieces to join (the stream must be at a byte
    boundary): views of the chunk, so that the bytes are copied once, by the join."""
    view = memoryview(chunk)
    parts: list[bytes | memoryview] = []
    for start in range(0, len(view), _STORED_MAX):
        piece = view[start : start + _STORED_MAX]
        # BFINAL 0, BTYPE 00, padded to the byte: 0x00; then LEN and its complement.
        parts += (struct.pack("<BHH", 0, len(piece), len(piece) ^ 0xFFFF), piece)
    return parts


class GzipMember:
    """A streaming gzip compressor (``compress``, then ``flush`` once) at isal ``level``."""

    def __init__(self, level: int) -> None:
        self._deflate = isal_zlib.compressobj(level, isal_zlib.DEFLATED, _RAW_DEFLATE)
        self._crc = 0
        self._size = 0
        self._started = False
        self._deflating = False  # bytes went into the deflate stream since its last full flush

    def compress(self, chunk: bytes) -> bytes:
        head = self._start()
        self._crc = isal_zlib.crc32(chunk, self._crc)
        self._size += len(chunk)
        if not incompressible(chunk):
            self._deflating = True
            return head + self._deflate.compress(chunk)
        if self._deflating:
            head += self._deflate.flush(isal_zlib.Z_FULL_FLUSH)
            self._deflating = False
        return b"".join([head, *stored_blocks(chunk)])

    def flush(self) -> bytes:
        """The final block and the trailer (the CRC and size of everything compressed)."""
        return (
            self._start()
            + self._deflate.flush(isal_zlib.Z_FINISH)
            + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)
        )

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return _HEADER
