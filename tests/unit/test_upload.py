"""The upload's driver against the in-memory registry: after a failure, the registry's upload
status says where to go on (the real registry is exercised through a fault proxy in
tests/integration/test_reliability.py). Both kinds of registry are modelled: one that keeps what
reached it and answers the status with ``Range`` (as the spec says), and one that drops a
session broken mid-body (as CNCF Distribution does).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from engine import media_types
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import DeniedError, DigestInvalidError, DigestMismatchError, ImageSourceError
from engine.image.base import CHUNK_SIZE, FileLayer, FileSlice
from engine.push.encode import GZIP_READ_SIZE, LayerStream
from engine.push.upload import SMALL_BLOB_SIZE, BlobSender, BytesSource
from engine.retry import Attempts
from tests.support.memory_registry import Faults, MemoryRegistry
from tests.support.policies import FAST

pytestmark = pytest.mark.anyio

SIZE = 6 * 1024 * 1024 + 12_345  # over SMALL_BLOB_SIZE: the streamed path


def _layer(tmp_path: Path, *, compress: bool, size: int = SIZE) -> FileLayer:
    data = random.Random(7).randbytes(size)  # incompressible: the compressed blob is as long
    path = tmp_path / "layer.bin"
    path.write_bytes(data)
    if compress:
        return FileLayer(path=path, size=len(data))
    digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
    descriptor = Descriptor(media_types.OCI_LAYER_GZIP, digest, len(data))
    return FileLayer(path=path, size=len(data), descriptor=descriptor)


async def _no_wait(delay: float) -> None:
    raise AssertionError(f"nothing here is retried (asked to wait {delay} s)")


async def _send(
    registry: MemoryRegistry, layer: FileLayer, chunk_size: int | None = None
) -> tuple[Descriptor, BlobSender, list[float]]:
    waits: list[float] = []

    async def wait(delay: float) -> None:
        waits.append(delay)

    sender = BlobSender(registry, "repo", Attempts(FAST), wait, chunk_size=chunk_size)
    small = layer.size <= SMALL_BLOB_SIZE
    with anyio.fail_after(30):
        blob = await sender.send(LayerStream(layer), None, small=small)
    return blob, sender, waits


@dataclass(frozen=True)
class _ReadFrom(FileLayer):
    """A layer that notes the offset each of its readers starts at."""

    offsets: list[int] = field(default_factory=list)

    def reader(self, offset: int = 0) -> FileSlice:
        self.offsets.append(offset)
        return super().reader(offset)


async def test_a_registry_that_keeps_partial_bodies_is_resumed_mid_body(tmp_path: Path) -> None:
    given = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    layer = _ReadFrom(path=given.path, size=given.size, descriptor=given.descriptor)
    registry = MemoryRegistry(keeps_partial=True, faults=Faults(break_patch=1, break_at=1_000_000))

    blob, sender, waits = await _send(registry, layer)

    assert registry.blobs[blob.digest] == layer.path.read_bytes()
    assert registry.opened == 1, "the session was kept"
    assert len(waits) == 1
    second = registry.patches[1]
    assert second[2] == layer.size - 1_000_000, "only the rest was sent again"
    # What was handed to the connection: the rest, plus at most the one piece it broke in.
    assert sender.sent <= layer.size + CHUNK_SIZE
    assert layer.offsets == [0, 1_000_000], "the blob, hashed by nobody here, is read from there"


async def test_a_session_lost_mid_body_starts_again(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True))
    registry = MemoryRegistry(keeps_partial=False, faults=Faults(break_patch=1, break_at=500_000))

    blob, sender, _ = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert registry.opened == 2, "a new session, as CNCF Distribution requires"
    # A piece of a compressed blob is what one step made of a read: a block per CPU.
    assert blob.size <= sender.sent <= 500_000 + GZIP_READ_SIZE + blob.size


async def test_chunks_resume_from_the_last_acknowledged_one(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    chunk = 1024 * 1024
    registry = MemoryRegistry(keeps_partial=True, faults=Faults(break_patch=3))

    blob, sender, _ = await _send(registry, layer, chunk_size=chunk)

    assert registry.blobs[blob.digest] == layer.path.read_bytes()
    starts = [start for _, start, _ in registry.patches]
    assert starts[:4] == [0, chunk, 2 * chunk, 2 * chunk], "chunk 3 is sent again, not 1 or 2"
    assert sender.sent == layer.size + chunk


async def test_a_lost_commit_answer_is_recognised(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True))
    registry = MemoryRegistry(keeps_partial=True, faults=Faults(lose_commit_answer=True))

    blob, sender, _ = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert len(registry.patches) == 1 and sender.sent == blob.size


async def test_413_switches_to_chunks(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    registry = MemoryRegistry(keeps_partial=True, faults=Faults(refuse_large=True))

    blob, sender, waits = await _send(registry, layer)

    assert registry.blobs[blob.digest] == layer.path.read_bytes()
    assert sender.chunk_size is not None
    assert all(start is not None for _, start, _ in registry.patches)
    assert waits == [], "a 413 is not a reason to wait"


async def test_a_permanent_error_is_not_retried_and_the_session_is_deleted(
    tmp_path: Path,
) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    registry = MemoryRegistry(keeps_partial=True, faults=Faults(deny=True))

    with pytest.raises(DeniedError):
        await _send(registry, layer)

    assert registry.deleted == ["s1"] and not registry.blobs


async def test_a_source_that_lies_is_never_committed(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    assert layer.descriptor is not None
    wrong = Descriptor(layer.descriptor.media_type, Digest.of(b"other"), layer.size)
    liar = FileLayer(path=layer.path, size=layer.size, descriptor=wrong)
    registry = MemoryRegistry(keeps_partial=True)

    with pytest.raises(DigestMismatchError, match="the registry found other content"):
        await _send(registry, liar)

    # Hoist does not hash a blob that goes as it is: the registry's check at commit refuses it.
    assert not registry.blobs and registry.deleted == ["s1"]
    assert registry.patches == [("s1", None, layer.size)]


async def test_a_refused_digest_of_bytes_hoist_hashed_is_the_registry_s_error() -> None:
    """Bytes hashed here that the registry says do not match were not the source's fault."""
    data = b'{"architecture": "amd64"}'
    wrong = Descriptor(media_types.OCI_CONFIG, Digest.of(b"other"), len(data))
    sender = BlobSender(MemoryRegistry(), "repo", Attempts(FAST), _no_wait)

    with pytest.raises(DigestInvalidError):
        await sender.send(BytesSource(wrong, data), None, small=True)


@pytest.mark.parametrize("compress", [False, True], ids=["blob", "tar"])
async def test_a_file_cut_short_under_the_push_is_refused_as_the_source_and_not_retried(
    tmp_path: Path, compress: bool
) -> None:
    """The file shrinks after its source was read: the body ends early, and what is raised is
    the file's failure (not a failed request, which would be retried)."""
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=compress))
    await anyio.to_thread.run_sync(lambda: layer.path.write_bytes(b"short"))
    registry = MemoryRegistry(keeps_partial=True)

    with pytest.raises(ImageSourceError, match="bytes early"):
        await _send(registry, layer)

    assert not registry.blobs and registry.opened == 1 and registry.deleted == ["s1"]


async def test_a_small_blob_goes_in_the_commit_itself(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True, size=100_000))
    registry = MemoryRegistry(keeps_partial=True)

    blob, sender, _ = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert registry.patches == [] and registry.puts_with_body == 1
    assert sender.sent == blob.size


async def test_a_small_blob_whose_put_broke_goes_again_in_a_fresh_session(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True, size=100_000))
    registry = MemoryRegistry(keeps_partial=True, faults=Faults(fail_put_with_body=True))

    blob, _, waits = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert registry.opened == 2 and registry.deleted == ["s1"] and len(waits) == 1


async def test_a_small_blob_refused_as_too_large_goes_in_chunks(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True, size=100_000))
    registry = MemoryRegistry(keeps_partial=True, faults=Faults(refuse_large=True))

    blob, sender, _ = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert sender.chunk_size is not None and registry.patches
