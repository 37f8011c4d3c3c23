"""The resume decision: after a failure, the registry's upload status says where to go on.

A fake registry in memory (pure logic: the real one is exercised through a fault proxy in
tests/integration/test_reliability.py) models both kinds: one that keeps what reached it and
answers the status with ``Range`` (as the spec says), and one that drops a session broken
mid-body (as CNCF Distribution does).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from engine import media_types
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import DeniedError, DigestMismatchError, RegistryResponseError, TransportError
from engine.image.base import CHUNK_SIZE, FileLayer
from engine.push.encode import LayerStream
from engine.push.upload import BlobSender
from engine.registry.protocol import UploadSession, UploadStatus
from engine.retry import FAST

pytestmark = pytest.mark.anyio

SIZE = 6 * 1024 * 1024 + 12_345  # over SMALL_BLOB_SIZE: the streamed path


@dataclass
class Faults:
    """What goes wrong, once each: the n-th PATCH breaks after ``break_at`` bytes, etc."""

    break_patch: int | None = None
    break_at: int = 0
    lose_commit_answer: bool = False
    refuse_large: bool = False
    deny: bool = False
    fail_put_with_body: bool = False


@dataclass
class FakeRegistry:
    keeps_partial: bool
    faults: Faults = field(default_factory=Faults)
    sessions: dict[str, bytearray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    patches: list[tuple[str, int | None, int]] = field(default_factory=list)  # (loc, start, n)
    deleted: list[str] = field(default_factory=list)
    opened: int = 0
    puts_with_body: int = 0

    async def initiate_upload(self, repository: str) -> UploadSession:
        self.opened += 1
        location = f"s{self.opened}"
        self.sessions[location] = bytearray()
        return UploadSession(location)

    async def patch_blob(self, repository: str, location: str, body: AsyncIterable[bytes]) -> str:
        if self.faults.refuse_large:
            self.faults.refuse_large = False
            raise RegistryResponseError("request entity too large", status=413)
        if self.faults.deny:
            raise DeniedError("denied: no", status=403)
        received = 0
        number = len(self.patches) + 1
        async for piece in body:
            if number == self.faults.break_patch and received + len(piece) > self.faults.break_at:
                keep = self.faults.break_at - received
                self.sessions[location] += piece[:keep]
                self.patches.append((location, None, received + keep))
                if not self.keeps_partial:
                    del self.sessions[location]
                raise TransportError("connection reset")
            self.sessions[location] += piece
            received += len(piece)
        self.patches.append((location, None, received))
        return location

    async def patch_chunk(self, repository: str, location: str, chunk: bytes, start: int) -> str:
        number = len(self.patches) + 1
        assert start == len(self.sessions[location]), "Content-Range must start where it ended"
        self.patches.append((location, start, len(chunk)))
        if number == self.faults.break_patch:
            raise TransportError("connection reset")
        self.sessions[location] += chunk
        return location

    async def upload_status(self, repository: str, location: str) -> UploadStatus | None:
        if location not in self.sessions:
            return None
        return UploadStatus(location, len(self.sessions[location]))

    async def commit_blob(
        self, repository: str, location: str, digest: Digest, body: bytes = b""
    ) -> None:
        if body and self.faults.refuse_large:
            self.faults.refuse_large = False
            raise RegistryResponseError("request entity too large", status=413)
        if body and self.faults.fail_put_with_body:
            self.faults.fail_put_with_body = False
            self.sessions[location] += body[: len(body) // 2]
            raise TransportError("connection reset")
        self.puts_with_body += bool(body)
        data = bytes(self.sessions.pop(location)) + body
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        self.blobs[digest] = data
        if self.faults.lose_commit_answer:
            self.faults.lose_commit_answer = False
            raise TransportError("the answer never came")

    async def check_blob(self, repository: str, digest: Digest) -> int | None:
        blob = self.blobs.get(digest)
        return None if blob is None else len(blob)

    async def cancel_upload(self, repository: str, location: str) -> None:
        self.deleted.append(location)
        self.sessions.pop(location, None)


def _layer(tmp_path: Path, *, compress: bool, size: int = SIZE) -> FileLayer:
    data = random.Random(7).randbytes(size)  # incompressible: the compressed blob is as long
    path = tmp_path / "layer.bin"
    path.write_bytes(data)
    if compress:
        return FileLayer(path=path, size=len(data))
    digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
    descriptor = Descriptor(media_types.OCI_LAYER_GZIP, digest, len(data))
    return FileLayer(path=path, size=len(data), descriptor=descriptor)


async def _send(
    registry: FakeRegistry, layer: FileLayer, chunk_size: int | None = None
) -> tuple[Descriptor, BlobSender, list[float]]:
    waits: list[float] = []

    async def wait(delay: float) -> None:
        waits.append(delay)

    sender = BlobSender(registry, "repo", FAST, wait, chunk_size=chunk_size)  # type: ignore[arg-type]
    with anyio.fail_after(30):
        blob = await sender.send(LayerStream(layer), None)
    return blob, sender, waits


async def test_a_registry_that_keeps_partial_bodies_is_resumed_mid_body(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    registry = FakeRegistry(keeps_partial=True, faults=Faults(break_patch=1, break_at=1_000_000))

    blob, sender, waits = await _send(registry, layer)

    assert registry.blobs[blob.digest] == layer.path.read_bytes()
    assert registry.opened == 1, "the session was kept"
    assert len(waits) == 1
    second = registry.patches[1]
    assert second[2] == layer.size - 1_000_000, "only the rest was sent again"
    # What was handed to the connection: the rest, plus at most the one piece it broke in.
    assert sender.sent <= layer.size + CHUNK_SIZE


async def test_a_session_lost_mid_body_starts_again(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True))
    registry = FakeRegistry(keeps_partial=False, faults=Faults(break_patch=1, break_at=500_000))

    blob, sender, _ = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert registry.opened == 2, "a new session, as CNCF Distribution requires"
    assert blob.size <= sender.sent <= 500_000 + CHUNK_SIZE + blob.size


async def test_chunks_resume_from_the_last_acknowledged_one(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    chunk = 1024 * 1024
    registry = FakeRegistry(keeps_partial=True, faults=Faults(break_patch=3))

    blob, sender, _ = await _send(registry, layer, chunk_size=chunk)

    assert registry.blobs[blob.digest] == layer.path.read_bytes()
    starts = [start for _, start, _ in registry.patches]
    assert starts[:4] == [0, chunk, 2 * chunk, 2 * chunk], "chunk 3 is sent again, not 1 or 2"
    assert sender.sent == layer.size + chunk


async def test_a_lost_commit_answer_is_recognised(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True))
    registry = FakeRegistry(keeps_partial=True, faults=Faults(lose_commit_answer=True))

    blob, sender, _ = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert len(registry.patches) == 1 and sender.sent == blob.size


async def test_413_switches_to_chunks(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    registry = FakeRegistry(keeps_partial=True, faults=Faults(refuse_large=True))

    blob, sender, waits = await _send(registry, layer)

    assert registry.blobs[blob.digest] == layer.path.read_bytes()
    assert sender.chunk_size is not None
    assert all(start is not None for _, start, _ in registry.patches)
    assert waits == [], "a 413 is not a reason to wait"


async def test_a_permanent_error_is_not_retried_and_the_session_is_deleted(
    tmp_path: Path,
) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    registry = FakeRegistry(keeps_partial=True, faults=Faults(deny=True))

    with pytest.raises(DeniedError):
        await _send(registry, layer)

    assert registry.deleted == ["s1"] and not registry.blobs


async def test_a_source_that_lies_is_never_committed(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=False))
    assert layer.descriptor is not None
    wrong = Descriptor(layer.descriptor.media_type, Digest.of(b"other"), layer.size)
    liar = FileLayer(path=layer.path, size=layer.size, descriptor=wrong)
    registry = FakeRegistry(keeps_partial=True)

    with pytest.raises(DigestMismatchError):
        await _send(registry, liar)

    assert not registry.blobs and registry.deleted == ["s1"]


async def test_a_small_blob_goes_in_the_commit_itself(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True, size=100_000))
    registry = FakeRegistry(keeps_partial=True)

    blob, sender, _ = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert registry.patches == [] and registry.puts_with_body == 1
    assert sender.sent == blob.size


async def test_a_small_blob_whose_put_broke_goes_again_in_a_fresh_session(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True, size=100_000))
    registry = FakeRegistry(keeps_partial=True, faults=Faults(fail_put_with_body=True))

    blob, _, waits = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert registry.opened == 2 and registry.deleted == ["s1"] and len(waits) == 1


async def test_a_small_blob_refused_as_too_large_goes_in_chunks(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(lambda: _layer(tmp_path, compress=True, size=100_000))
    registry = FakeRegistry(keeps_partial=True, faults=Faults(refuse_large=True))

    blob, sender, _ = await _send(registry, layer)

    assert blob.digest in registry.blobs
    assert sender.chunk_size is not None and registry.patches
