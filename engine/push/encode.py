"""A layer's body as the registry receives it, hashed (and compressed) in one pass, off the loop.

An uncompressed layer is compressed as its push asks (``compression.Compression``): gzip with
python-isal in blocks, storing what does not compress (``gzip_member``), or zstd with libzstd
(``zstandard``, imported by the first zstd push only). Both are deterministic: the gzip member
has mtime 0 and no name and its blocks are cut at fixed offsets, and a zstd frame holds the
content's size and no dictionary, made by one thread, so one layer always gives the same bytes
and the same digest (a re-push finds its blobs even when the local metadata is gone). Each chunk
is read, hashed and compressed in one worker-thread call: isal, libzstd and hashlib release the
GIL, so several layers really compress at once and the event loop keeps serving the network;
a gzip chunk holds a block per CPU, compressed at once on those no other layer keeps busy. A
compressor keeps a bounded window, not the layer: memory does not grow with the layer. The diff
ID is hashed again only when the source has not already verified it (the store has, at load).

A blob that goes as it is (a layout's or an archive's) is not hashed here: its digest is the
source's word, and the registry hashes every byte it receives and refuses a commit whose digest
does not match (``DIGEST_INVALID``), which ``upload`` reports as the source's digest mismatch.
A second hash here would check nothing the registry does not, at 0.5 CPU-s per GiB on the
cores a loopback registry shares, and a resumed upload seeks to its offset instead of reading
the part the registry already holds. Its pieces are read on the event loop wherever the page
cache holds them (``FileSlice.read_cached``), in a worker thread where they must come from disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

import anyio

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import DigestMismatchError, ImageSourceError
from engine.image.base import CHUNK_SIZE, Layer, LayerReader
from engine.offload import CPU_THREADS, cpu_bound, idle_cpus, stream_started
from engine.push.compression import DEFAULT, Compression
from engine.push.gzip_member import BLOCK_SIZE, GzipMember

if TYPE_CHECKING:
    from zstandard import ZstdCompressionObj

#: Bytes read per step of a blob that goes as it is. Each upload holds about three pieces at a
#: time (being read, being sent, in the socket's buffer): measured on 8 × 32 MiB from a layout,
#: 256 KiB pieces cut the push's peak RSS by 9 MiB against 1 MiB ones, at the same speed. A tar
#: being compressed is read ``CHUNK_SIZE`` at a time (what is sent of it is smaller, and each
#: step costs a thread hop); for gzip, a block, and one more for each CPU that no other layer
#: keeps busy (up to 8 in all, so that a layer's memory stays a few MiB on a big machine): one
#: step compresses them at once, and a layer among as many as the CPUs reads one at a time.
FIXED_READ_SIZE = 256 << 10
GZIP_MOST_BLOCKS = 8
#: The most one gzip step reads.
GZIP_READ_SIZE = BLOCK_SIZE * min(CPU_THREADS, GZIP_MOST_BLOCKS)


class Compressor(Protocol):
    """A streaming compressor: ``compress`` the tar's bytes, ``flush`` once at its end, or
    ``finish`` with its last bytes (the two at once)."""

    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...

    def finish(self, data: bytes, /) -> bytes: ...


class _ZstdStream:
    """A zstd frame as a ``Compressor``: zstandard's compressobj, with ``finish``."""

    def __init__(self, compressobj: ZstdCompressionObj) -> None:
        self._compressobj = compressobj

    def compress(self, data: bytes, /) -> bytes:
        return self._compressobj.compress(data)

    def flush(self) -> bytes:
        return self._compressobj.flush()

    def finish(self, data: bytes, /) -> bytes:
        return self._compressobj.compress(data) + self._compressobj.flush()


def compressor(compression: Compression, size: int) -> Compressor:
    """A new compressor for a tar of ``size`` bytes: the same arguments, the same bytes out."""
    if compression.algorithm == "gzip":
        return GzipMember(compression.level)
    import zstandard  # only zstd pushes pay for importing it

    # threads=0: one thread makes the frame (zstd's workers would split it where they please).
    zstd = zstandard.ZstdCompressor(level=compression.level, write_content_size=True, threads=0)
    return _ZstdStream(zstd.compressobj(size=size))


class LayerStream:
    """Iterate it to get the blob's bytes; then ``descriptor()`` names what was sent.

    Each iteration is a pass of its own, so a request that must be sent again
    (re-authentication) simply iterates again, and a worker thread still busy with an abandoned
    pass cannot touch the next one. ``on_read`` is told the position reached in the source
    (Docker's Pushing counter).
    """

    def __init__(
        self,
        layer: Layer,
        on_read: Callable[[int], None] | None = None,
        compression: Compression = DEFAULT,
    ) -> None:
        self.layer = layer
        self._on_read = on_read
        self.compression = compression
        self._pass = _Pass(layer, compression)

    @property
    def size(self) -> int:
        """Blob bytes made by the latest pass so far."""
        return self._pass.size

    @property
    def length(self) -> int | None:
        """The blob's size when the source fixes the blob; None when it is compressed here."""
        given = self.layer.descriptor
        return None if given is None else given.size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.from_offset(0)

    def from_offset(self, start: int) -> Reading:
        """The blob's bytes from ``start`` on, to resume an upload the registry kept part of.

        A blob that goes as it is is read from ``start``. One compressed here is made again from
        the beginning (compression is deterministic, and the digest covers the whole blob) and
        the part before ``start`` is not sent: CPU spent instead of bandwidth.
        """
        if self.layer.descriptor is not None:
            self._pass = _Pass(self.layer, self.compression, start)
            return Reading(self._pass, 0, self._on_read)
        self._pass = _Pass(self.layer, self.compression)
        return Reading(self._pass, start, self._on_read)

    @property
    def digest(self) -> Digest:
        given = self.layer.descriptor
        return Digest.from_hash(self._pass.blob_hash) if given is None else given.digest

    @property
    def digest_checked(self) -> bool:
        """Whether this process hashed the bytes it sends: only a blob it compresses."""
        return self.layer.descriptor is None

    def descriptor(self) -> Descriptor:
        """The blob sent: the source's descriptor for one that goes as it is (its reader raises
        where the file ends early, and the registry checks the digest at commit); for one
        compressed here, what the latest whole pass made.

        Raises DigestMismatchError before anything is committed when the tar is not what its
        diff ID promises.
        """
        done = self._pass
        given = self.layer.descriptor
        if given is not None:
            return given
        diff_id = Digest.from_hash(done.diff_hash)
        if done.check_diff_id and self.layer.diff_id is not None and diff_id != self.layer.diff_id:
            raise DigestMismatchError(
                f"layer {self.layer.diff_id.short}", str(self.layer.diff_id), str(diff_id)
            )
        return Descriptor(self.compression.media_type, self.digest, done.size)


class Reading:
    """One pass's blob bytes from an offset: an async iterator, deliberately not a generator.

    aiohttp's writer task iterates a request body; when the connection dies mid-body that task
    can be dropped while suspended inside it, and asyncio then closes abandoned async generators
    from finalizer tasks of their own, in no set order. A chain of generators whose clean-up
    awaits (closing the source in a thread) then fails with "aclose(): asynchronous generator is
    already running". An object has no finalizer task: ``aclose`` is explicit and idempotent, and
    an abandoned pass's file is closed when the pass is collected.
    """

    def __init__(
        self, current: _Pass, skip: int, on_read: Callable[[int], None] | None = None
    ) -> None:
        self._pass = current
        self._skip = skip
        self._on_read = on_read
        self._done = False

    def __aiter__(self) -> Reading:
        return self

    async def __anext__(self) -> bytes:
        while not self._done:
            try:
                cached = self._pass.step_cached()
                out, self._done = await cpu_bound(self._pass.step) if cached is None else cached
            except GeneratorExit:
                # This coroutine is being closed: it may not await; the collector closes the file.
                self._done = True
                raise
            except EOFError as error:
                # The file is shorter than when the source was read: the source's fault.
                await self.aclose()
                raise ImageSourceError(str(error)) from error
            except BaseException:
                await self.aclose()
                raise
            if self._on_read is not None:
                self._on_read(self._pass.position)
            if self._skip >= len(out):
                self._skip -= len(out)
                continue
            out, self._skip = out[self._skip :], 0
            return out
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Close the source if the pass was left before its end (failed, or the consumer
        stopped); shielded, so a cancelled consumer still closes it."""
        if not self._done:
            self._done = True
            with anyio.CancelScope(shield=True):
                await cpu_bound(self._pass.close)


def _nothing() -> None:
    return None


class _Pass:
    """One pass over a layer from ``start``: its reader, compressor and hashes. Every method
    but the constructor and ``step_cached`` runs in a worker thread."""

    def __init__(self, layer: Layer, compression: Compression, start: int = 0) -> None:
        self._layer = layer
        self._start = start
        self._compression = compression
        self._reader: LayerReader | None = None
        self._compressor: Compressor | None = None
        #: Tells ``offload`` that this pass's compressing (a CPU kept busy) has ended.
        self._ended: Callable[[], object] = _nothing
        self.compressing = layer.descriptor is None
        self.check_diff_id = self.compressing and not layer.verified
        self.diff_hash = hashlib.sha256()
        self.blob_hash = hashlib.sha256()
        self.position = start  # in the source
        self.size = start  # of the blob made (or, as it is, read) so far

    def step(self) -> tuple[bytes, bool]:
        """(blob bytes, whether they are the last): one thread hop per chunk.

        Reads a chunk, hashes it and compresses it; the first call also opens the source and
        the last also flushes the compressor and closes the source, so that a layer of one chunk
        costs one hop.
        """
        if self._reader is None:
            self._reader = self._layer.reader(self._start)
            if self.compressing:
                # Here, in the worker thread: a zstd compressor allocates its window when made.
                self._compressor = compressor(self._compression, self._layer.size)
                self._ended = stream_started(self)
        return self._took(self._reader.read(self._read_size()))

    def step_cached(self) -> tuple[bytes, bool] | None:
        """The next step of a blob that goes as it is, on the caller's thread, when memory
        holds its bytes; None when the step must go to a worker thread (the first, which opens
        the file, or one whose bytes are on disk)."""
        if self._reader is None or self.compressing:
            return None
        raw = self._reader.read_cached(FIXED_READ_SIZE)
        return None if raw is None else self._took(raw)

    def _took(self, raw: bytes) -> tuple[bytes, bool]:
        self.position += len(raw)
        if self.check_diff_id:
            self.diff_hash.update(raw)
        # A layer's reader ends where the layer does, and raises if its file ends sooner.
        last = not raw or self.position >= self._layer.size
        if self._compressor is None:
            out = raw
        else:
            # The blob's last piece in one (a small layer's whole blob): no copy to append.
            out = self._compressor.finish(raw) if last else self._compressor.compress(raw)
        if last:
            self.close()
        if self.compressing:
            self.blob_hash.update(out)
        self.size += len(out)
        return out, last

    def _read_size(self) -> int:
        if not self.compressing:
            return FIXED_READ_SIZE
        if self._compression.algorithm != "gzip":
            return CHUNK_SIZE
        return BLOCK_SIZE * (1 + idle_cpus(GZIP_MOST_BLOCKS - 1))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._ended()
