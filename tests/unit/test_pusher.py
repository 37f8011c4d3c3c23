"""The pusher's ordering rules, against an in-memory registry (pure logic: no network here)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import media_types
from engine.digest import Digest
from engine.errors import BlobUploadInvalidError
from engine.image.base import FileLayer, SourceImage
from engine.image.sample import LayerSpec, make_config, write_layer_tar
from engine.progress.events import LayerProgress, ProgressEvent, PushComplete
from engine.push.pusher import Pusher
from engine.push.result import LayerOutcome
from engine.push.upload import UploadOptions
from engine.reference import parse_normalized_named
from engine.registry.auth_config import AuthConfig
from engine.registry.protocol import Absence, UploadSession, UploadStatus
from engine.retry import RetryPolicy
from engine.transfer import TransferManager

pytestmark = pytest.mark.anyio


class MemoryRegistry:
    """Keeps blobs and manifests in dicts; ``fail_upload`` makes the n-th body (a PATCH, or a
    PUT carrying a small blob) fail."""

    base = "memory://registry"

    def __init__(self, fail_upload: int | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}
        self.sessions: dict[str, bytearray] = {}
        self.cancelled: list[str] = []
        self.uploads = 0
        self.started = 0
        self.fail_upload = fail_upload

    async def check_blob(self, repository: str, digest: Digest) -> int | None:
        blob = self.blobs.get(digest)
        return None if blob is None else len(blob)

    async def head_blob(self, repository: str, digest: Digest) -> int | Absence:
        size = await self.check_blob(repository, digest)
        return Absence.MISSING if size is None else size

    async def initiate_upload(self, repository: str) -> UploadSession:
        self.started += 1
        location = f"upload-{self.started}"
        self.sessions[location] = bytearray()
        return UploadSession(location)

    async def upload_status(self, repository: str, location: str) -> UploadStatus | None:
        # Like CNCF Distribution: a session broken mid-body is gone.
        return None

    async def mount_blob(
        self, repository: str, digest: Digest, source: str | None
    ) -> UploadSession | None:
        return None if digest in self.blobs else await self.initiate_upload(repository)

    async def patch_blob(self, repository: str, location: str, body: AsyncIterable[bytes]) -> str:
        self._count_upload()
        async for chunk in body:
            self.sessions[location] += chunk
        return location

    def _count_upload(self) -> None:
        self.uploads += 1
        if self.uploads == self.fail_upload:
            raise BlobUploadInvalidError("broken on purpose", status=400)

    async def commit_blob(
        self, repository: str, location: str, digest: Digest, body: bytes = b""
    ) -> None:
        if body:
            self._count_upload()
        data = bytes(self.sessions.pop(location)) + body
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        self.blobs[digest] = data

    async def cancel_upload(self, repository: str, location: str) -> None:
        self.cancelled.append(location)
        self.sessions.pop(location, None)

    async def put_blob(self, repository: str, digest: Digest, data: bytes) -> None:
        session = await self.initiate_upload(repository)
        await self.commit_blob(repository, session.location, digest, data)

    async def put_manifest(self, repository: str, tag: str, media_type: str, data: bytes) -> Digest:
        self.manifests[tag] = data
        return Digest.of(data)


class OnePool:
    def __init__(self, registry: MemoryRegistry) -> None:
        self.registry = registry

    async def client(self, domain: str) -> MemoryRegistry:
        return self.registry

    async def credentials(self, domain: str) -> AuthConfig:
        return AuthConfig()


def _image(tmp_path: Path, specs: list[LayerSpec]) -> SourceImage:
    layers = []
    for index, spec in enumerate(specs):
        path = tmp_path / f"layer-{index}.tar"
        diff_id = write_layer_tar(path, spec)
        layers.append(FileLayer(path=path, size=path.stat().st_size, diff_id=diff_id))
    config = make_config([layer.diff_id for layer in layers if layer.diff_id])
    return SourceImage(config=config, layers=layers, config_media_type=media_types.DOCKER_CONFIG)


async def _push(registry: MemoryRegistry, image: SourceImage, events: list[ProgressEvent]) -> Any:
    options = UploadOptions(retry=RetryPolicy(attempts=1))
    pusher = Pusher(OnePool(registry), TransferManager(2), options=options)  # type: ignore[arg-type]
    ref = parse_normalized_named("localhost:5000/app:v1")
    with anyio.fail_after(30):
        return await pusher.push(ref, image, events.append)


async def test_manifest_names_every_layer_in_order(tmp_path: Path) -> None:
    specs = [LayerSpec(4096, 1), LayerSpec(0, 2), LayerSpec(4096, 1), LayerSpec(70_000, 3)]
    image = await anyio.to_thread.run_sync(_image, tmp_path, specs)
    registry = MemoryRegistry()
    events: list[ProgressEvent] = []

    result = await _push(registry, image, events)

    manifest = json.loads(registry.manifests["v1"])
    assert manifest["config"]["digest"] == str(Digest.of(image.config))
    assert [layer["digest"] for layer in manifest["layers"]] == [
        str(r.digest) for r in result.layers
    ]
    assert len(manifest["layers"]) == 4
    assert manifest["layers"][0] == manifest["layers"][2]  # one content, one blob
    for layer in manifest["layers"]:
        assert layer["digest"] in registry.blobs
    assert isinstance(events[-1], PushComplete) and events[-1].digest == result.digest


async def test_a_repeated_layer_is_uploaded_once(tmp_path: Path) -> None:
    specs = [LayerSpec(4096, 7), LayerSpec(4096, 7), LayerSpec(4096, 7)]
    image = await anyio.to_thread.run_sync(_image, tmp_path, specs)
    registry = MemoryRegistry()
    events: list[ProgressEvent] = []

    result = await _push(registry, image, events)

    assert registry.uploads == 2, "one for the layer, one for the config"
    preparing = [e for e in events if isinstance(e, LayerProgress) and e.status == "Preparing"]
    assert len(preparing) == 1
    assert {r.outcome for r in result.layers} == {LayerOutcome.PUSHED}


async def test_one_failed_layer_means_no_manifest(tmp_path: Path) -> None:
    specs = [LayerSpec(300_000, i) for i in range(4)]
    image = await anyio.to_thread.run_sync(_image, tmp_path, specs)
    registry = MemoryRegistry(fail_upload=2)
    events: list[ProgressEvent] = []

    with pytest.raises(BlobUploadInvalidError):
        await _push(registry, image, events)

    assert registry.manifests == {}
    assert registry.cancelled, "the failed session was not deleted"
    assert not registry.sessions, "an upload session was left open"
    assert not any(isinstance(e, PushComplete) for e in events)


async def test_a_layer_that_is_not_its_diff_id_is_never_committed(tmp_path: Path) -> None:
    image = await anyio.to_thread.run_sync(_image, tmp_path, [LayerSpec(4096, 1)])
    layer = image.layers[0]
    assert isinstance(layer, FileLayer)
    wrong = FileLayer(path=layer.path, size=layer.size, diff_id=Digest.of(b"something else"))
    image = SourceImage(image.config, [wrong], image.config_media_type)
    registry = MemoryRegistry()

    with pytest.raises(Exception, match="digest mismatch"):
        await _push(registry, image, [])

    assert registry.blobs == {} and registry.manifests == {}
