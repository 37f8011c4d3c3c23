"""The gzip member Hoist writes: 1 MiB blocks, each deflated on its own (so that one layer can
compress on every idle CPU) or stored where it does not compress.

**Blocks.** The tar is cut into ``BLOCK_SIZE`` blocks at fixed offsets, and each becomes a run
of deflate blocks of its own: a fresh isal stream primed with the 32 KiB before the block (so a
match may still reach back across the cut, as in one long stream), ended by a sync flush
(byte-aligned, not final), the last block by the final one. Every gzip reader takes the
concatenation as one member; it is pigz's layout. Compressing blocks apart lets a single big
layer use the idle cores (``offload.spread``) instead of one: measured on tars of this
machine's /usr/bin, /usr/lib and /usr/share, the blocks deflated come out within 0.1 % of one
isal stream's size, and fed 2 MiB at a time (as ``encode`` does on 2 cores) two threads compress
a tar in about 0.65× the time of one.

**Stored blocks.** Layers often hold bytes that are already compressed (archives, images,
packed weights) or random. Deflating them costs isal's full speed (about 350 MiB/s at level 3
here) to write about the same bytes again (100.05 %); storing them costs a copy and a CRC and
writes 100.01 %. So each block is first *probed*: small windows across it are deflated at
isal's fastest level, and a block they barely shrink is stored, in deflate's own stored blocks.
Sixteen windows of 4 KiB, one every 64 KiB: four of 16 KiB (the first form of this member)
missed the text between the packed files of a mixed block, and /usr/share's tar stored 14 of
its 102 blocks, which isal would have shrunk by 2–25 %: 2 % of the tar's blob. The sixteen
store none of those, for at most the same 64 KiB deflated per block, and a block of text is
judged by its first window (``incompressible``; measured in ``benchmarks/README.md``).

Deterministic: the cuts are at fixed offsets of the tar, however it was read, and each block's
bytes depend on it and the 32 KiB before it alone, never on which thread made them or when.
"""

from __future__ import annotations

import struct
from itertools import chain

from isal import isal_zlib

from engine.offload import spread

#: The unit of the member: what is deflated (or stored) apart, and spread over the CPUs.
BLOCK_SIZE = 1 << 20
#: Deflate's window: a block's stream is primed with this much of the tar before it.
HISTORY = 32 << 10

#: The member's header as isal writes it: deflate, no flags, mtime 0, no extra flags, OS unknown.
_HEADER = bytes.fromhex("1f8b08000000000000ff")
_RAW_DEFLATE = -15
#: A stored block holds at most this many bytes (its length is 16 bits).
_STORED_MAX = 0xFFFF
#: Windows deflated to probe a block, and the size of each: spread so that a block is stored only
#: when it is incompressible throughout, not merely where it starts or between packed files.
PROBE_WINDOWS = 16
PROBE_BYTES = 4 << 10
#: A block whose windows deflate to more than this share of their size is stored. Data this
#: dense gains at most a few percent at level 3, for about ten times the CPU of the copy.
STORE_ABOVE = 0.97


#: The most a window can deflate to: isal stores what it cannot shrink, in one stored block.
_MOST_PACKED = PROBE_BYTES + 5


def incompressible(block: bytes | memoryview) -> bool:
    """Whether deflating ``block`` would barely shrink it, judged from windows across it.

    The windows are deflated in order until the rest could not change the verdict: text is
    judged by its first window, so the probe costs a sixteenth of its full price on the blocks
    that compress (the full price: about 11 % of level 2's CPU on the tars of /usr/bin, /usr/lib
    and /usr/share), and the verdict is the one all sixteen windows give.
    """
    if len(block) < PROBE_WINDOWS * PROBE_BYTES:
        return False  # small blocks: probing would cost what compressing costs
    view = memoryview(block)
    stride = len(view) // PROBE_WINDOWS
    most = STORE_ABOVE * PROBE_WINDOWS * PROBE_BYTES  # packed up to this: deflated
    packed = 0
    for n in range(PROBE_WINDOWS):
        window = view[n * stride : n * stride + PROBE_BYTES]
        packed += len(isal_zlib.compress(window, 1, _RAW_DEFLATE))
        if packed + (PROBE_WINDOWS - 1 - n) * _MOST_PACKED <= most:
            return False
    return packed > most


def stored_blocks(block: bytes | memoryview) -> list[bytes | memoryview]:
    """``block`` as non-final stored blocks, in pieces to join (the stream must be at a byte
    boundary): views of the block, so that the bytes are copied once, by the join."""
    view = memoryview(block)
    parts: list[bytes | memoryview] = []
    for start in range(0, len(view), _STORED_MAX):
        piece = view[start : start + _STORED_MAX]
        # BFINAL 0, BTYPE 00, padded to the byte: 0x00; then LEN and its complement.
        parts += (struct.pack("<BHH", 0, len(piece), len(piece) ^ 0xFFFF), piece)
    return parts


def deflate_block(block: bytes | memoryview, history: bytes, level: int, last: bool) -> bytes:
    """One block's part of the deflate stream, made apart from every other: byte-aligned at its
    end, and the stream's final block when ``last``. ``history``: the tar's bytes just before
    it (up to ``HISTORY``), which its matches may refer to."""
    return b"".join(_block_parts(block, history, level, last))


def _block_parts(
    block: bytes | memoryview, history: bytes, level: int, last: bool
) -> list[bytes | memoryview]:
    """``deflate_block`` in pieces to join: a stored block's are views of ``block``."""
    if incompressible(block):
        # A stored block needs no stream, but for the final (empty) block that ends the member.
        end = _stream(level, b"").flush(isal_zlib.Z_FINISH) if last else b""
        return [*stored_blocks(block), end]
    stream = _stream(level, history)
    return [
        stream.compress(block),
        stream.flush(isal_zlib.Z_FINISH if last else isal_zlib.Z_SYNC_FLUSH),
    ]


def _stream(level: int, history: bytes) -> isal_zlib.Compress:
    """A raw deflate stream at ``level``, primed with ``history`` (isal refuses an empty one)."""
    if history:
        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, _RAW_DEFLATE, zdict=history)
    return isal_zlib.compressobj(level, isal_zlib.DEFLATED, _RAW_DEFLATE)


class GzipMember:
    """A streaming gzip compressor (``compress``, then ``flush`` once) at isal ``level``.

    ``compress`` returns the blocks completed so far, made at once on the idle CPUs (call it
    from a worker thread, with a few blocks' worth: ``encode`` reads ``BLOCK_SIZE`` times the
    CPUs); the rest waits for more bytes or for ``flush``. ``finish`` is both for the last bytes.
    The blocks' pieces are joined once per call: each copy of a stored block costs what storing
    it does (a CRC and a copy).
    """

    def __init__(self, level: int) -> None:
        self._level = level
        self._pending: list[bytes] = []  # the tar's bytes after the last block made
        self._pending_size = 0
        self._history = b""  # the tar's last ``HISTORY`` bytes before ``_pending``
        self._crc = 0
        self._size = 0
        self._started = False

    def compress(self, data: bytes) -> bytes:
        return b"".join(self._whole_blocks(data))

    def flush(self) -> bytes:
        """The last block, final, and the trailer (the CRC and size of everything compressed)."""
        return b"".join(self._end())

    def finish(self, data: bytes) -> bytes:
        """``compress(data) + flush()``, the same bytes, joined once."""
        return b"".join([*self._whole_blocks(data), *self._end()])

    def _whole_blocks(self, data: bytes) -> list[bytes | memoryview]:
        self._take(data)
        if self._pending_size < BLOCK_SIZE:
            return [self._start()]
        data = b"".join(self._pending)
        whole = len(data) - len(data) % BLOCK_SIZE
        self._pending, self._pending_size = [data[whole:]], len(data) - whole
        return self._blocks(memoryview(data)[:whole], last=False)

    def _end(self) -> list[bytes | memoryview]:
        parts = self._blocks(memoryview(b"".join(self._pending)), last=True)
        self._pending, self._pending_size = [], 0
        return [*parts, struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)]

    def _take(self, data: bytes) -> None:
        self._crc = isal_zlib.crc32(data, self._crc)
        self._size += len(data)
        self._pending.append(data)
        self._pending_size += len(data)

    def _blocks(self, data: memoryview, *, last: bool) -> list[bytes | memoryview]:
        """``data`` (whole blocks; or the tail, ``last``) deflated block by block, at once, in
        pieces to join."""
        starts = range(0, max(len(data), 1), BLOCK_SIZE)
        jobs = []
        for start in starts:
            block = data[start : start + BLOCK_SIZE]
            history = self._history if start == 0 else bytes(data[start - HISTORY : start])
            jobs.append((block, history, last and start == starts[-1]))
        if not last:  # whole blocks: the window is the last block's end
            self._history = bytes(data[-HISTORY:])
        made = spread(lambda job: _block_parts(job[0], job[1], self._level, job[2]), jobs)
        return [self._start(), *chain.from_iterable(made)]

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return _HEADER
