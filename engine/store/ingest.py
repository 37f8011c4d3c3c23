"""Import one layer: stream its bytes into a staged ``layer.tar``, decompressing and verifying.

The source's stream is read on the event loop (sources read files off it themselves); hashing,
gunzip and writing happen in worker threads, about ``CHUNK_SIZE`` bytes per hop. Memory does not
grow with the layer: the decompressor yields at most ``MAX_INFLATE`` bytes per step, so even a
gzip bomb is written out piece by piece (and then fails its diff ID check).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import anyio
from isal import isal_zlib

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import DigestMismatchError, ImageSourceError, StoreError
from engine.image.base import CHUNK_SIZE, Layer
from engine.offload import cpu_bound
from engine.store.layers import LAYER_TAR, StagedLayer
from engine.store.layout import Layout
from engine.temp_names import temp_path

MAX_INFLATE = 1 << 20
#: gzip member framing for zlib's decompressor.
_GZIP_WBITS = 31


class _TruncatedGzip(Exception):
    """The stream ended inside a gzip member."""


# isal's stub declares ``error`` as an instance; at run time it is the exception class.
_GZIP_ERRORS = (cast("type[Exception]", isal_zlib.error), _TruncatedGzip)


def is_gzip(descriptor: Descriptor | None) -> bool:
    """Whether a layer's bytes are gzip; refuses media types the store cannot unpack."""
    if descriptor is None:
        return False
    media_type = descriptor.media_type
    if media_type.endswith(("+gzip", ".gzip")):
        return True
    if media_type.endswith(".tar"):
        return False
    raise ImageSourceError(f"unsupported layer media type {media_type!r}")


class _Gunzip:
    """Streaming gunzip of one or more concatenated gzip members (as Go's reader accepts)."""

    def __init__(self) -> None:
        self._inflater = isal_zlib.decompressobj(wbits=_GZIP_WBITS)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._inflater.eof:
                self._inflater = isal_zlib.decompressobj(wbits=_GZIP_WBITS)
            self._started = True
            yield from self._inflate(data)
            data = self._inflater.unused_data if self._inflater.eof else b""

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        while True:
            out = self._inflater.decompress(data, MAX_INFLATE)
            if out:
                yield out
            data = self._inflater.unconsumed_tail
            # A full buffer may leave output pending even with no input left: ask again.
            if self._inflater.eof or (not data and len(out) < MAX_INFLATE):
                return

    def finish(self) -> None:
        if not self._started or not self._inflater.eof:
            raise _TruncatedGzip("gzip stream ends early")


@dataclass(frozen=True)
class _Written:
    blob_digest: Digest
    blob_size: int
    diff_id: Digest
    size: int


class _LayerWriter:
    """Hashes the bytes as received, gunzips them if need be, hashes and writes the tar."""

    def __init__(self, path: Path, descriptor: Descriptor | None) -> None:
        gzip = is_gzip(descriptor)
        self._gunzip = _Gunzip() if gzip else None
        # Uncompressed sha256 blobs are their own diff ID: one hash serves both.
        algorithm = descriptor.digest.algorithm if descriptor is not None else "sha256"
        self._blob_hash = _hasher(algorithm) if gzip or algorithm != "sha256" else None
        self._blob_size = 0
        self._diff_hash = hashlib.sha256()
        self._size = 0
        self._file = open(path, "xb")  # noqa: SIM115  closed by close(), across thread hops

    def write(self, chunk: bytes) -> None:
        self._blob_size += len(chunk)
        if self._blob_hash is not None:
            self._blob_hash.update(chunk)
        pieces = self._gunzip.feed(chunk) if self._gunzip is not None else (chunk,)
        for piece in pieces:
            self._write_tar(piece)

    def _write_tar(self, data: bytes) -> None:
        self._diff_hash.update(data)
        self._size += len(data)
        self._file.write(data)

    def finish(self) -> _Written:
        if self._gunzip is not None:
            self._gunzip.finish()
        self._file.flush()
        # Durable before its directory is renamed into place.
        os.fsync(self._file.fileno())
        diff_id = Digest.from_hash(self._diff_hash)
        blob = Digest.from_hash(self._blob_hash) if self._blob_hash is not None else diff_id
        return _Written(blob, self._blob_size, diff_id, self._size)

    def close(self) -> None:
        self._file.close()


def _hasher(algorithm: str) -> hashlib._Hash:
    try:
        return hashlib.new(algorithm)
    except ValueError as e:
        raise ImageSourceError(f"unsupported digest algorithm {algorithm!r}") from e


async def stage_layer(layout: Layout, layer: Layer, diff_id: Digest, what: str) -> StagedLayer:
    """Stream ``layer`` into a temp directory of the layer database and verify it.

    ``diff_id`` is what the image config says the tar hashes to; ``what`` names the layer in
    errors. On any failure, cancellation included, the temp directory is removed.
    """
    directory = await anyio.to_thread.run_sync(_make_staging_dir, layout)
    try:
        written = await _write_layer(directory / LAYER_TAR, layer, what)
        _verify(written, layer.descriptor, diff_id, what)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, directory, True)
        raise
    return StagedLayer(directory, written.diff_id, written.size)


def _make_staging_dir(layout: Layout) -> Path:
    try:
        layout.layerdb.mkdir(parents=True, exist_ok=True)
        directory = temp_path(layout.layerdb)
        directory.mkdir()
    except OSError as e:
        raise StoreError(f"{layout.layerdb}: cannot create: {e.strerror or e}") from e
    return directory


async def _write_layer(path: Path, layer: Layer, what: str) -> _Written:
    writer = await cpu_bound(_LayerWriter, path, layer.descriptor)
    try:
        async with aclosing(_batched(layer.open(), what)) as chunks:
            async for chunk in chunks:
                await cpu_bound(writer.write, chunk)
        return await cpu_bound(writer.finish)
    except _GZIP_ERRORS as e:
        raise ImageSourceError(f"{what}: corrupt gzip stream: {e}") from e
    except OSError as e:
        raise StoreError(f"{path}: cannot write: {e.strerror or e}") from e
    finally:
        with anyio.CancelScope(shield=True):
            await cpu_bound(writer.close)


async def _batched(stream: AsyncIterator[bytes], what: str) -> AsyncGenerator[bytes, None]:
    """Regroup a source's chunks into about ``CHUNK_SIZE`` bytes, so thread hops stay few."""
    pending: list[bytes] = []
    pending_size = 0
    try:
        async for chunk in stream:
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= CHUNK_SIZE:
                yield b"".join(pending)
                pending, pending_size = [], 0
    except (OSError, EOFError) as e:
        raise ImageSourceError(f"{what}: cannot read: {e}") from e
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    if pending:
        yield b"".join(pending)


def _verify(written: _Written, descriptor: Descriptor | None, diff_id: Digest, what: str) -> None:
    if descriptor is not None:
        if written.blob_digest != descriptor.digest:
            raise DigestMismatchError(what, descriptor.digest, written.blob_digest)
        if written.blob_size != descriptor.size:
            raise ImageSourceError(
                f"{what}: size mismatch: expected {descriptor.size} bytes, got {written.blob_size}"
            )
    if written.diff_id != diff_id:
        raise DigestMismatchError(f"{what} diff ID", diff_id, written.diff_id)
