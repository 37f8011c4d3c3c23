"""The pusher's ordering rules, against an in-memory registry (pure logic: no network here)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import media_types
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import BlobUploadInvalidError, PushError, RegistryResponseError
from engine.image.base import FileLayer, SourceImage
from engine.progress.events import LayerProgress, LayerStatus, ProgressEvent, PushComplete
from engine.push import manifest as manifests
from engine.push.pusher import Pusher
from engine.push.result import LayerOutcome
from engine.push.upload import UploadOptions
from engine.reference import parse_normalized_named
from engine.registry.protocol import Absence
from engine.retry import RetryPolicy
from engine.transfer import TransferManager
from tests.support.memory_registry import Faults, MemoryRegistry, OnePool
from tests.support.policies import FAST
from tests.support.sample import LayerSpec, make_config, write_layer_tar

pytestmark = pytest.mark.anyio

ONE_TRY = RetryPolicy(attempts=1)


def _image(tmp_path: Path, specs: list[LayerSpec]) -> SourceImage:
    layers = []
    for index, spec in enumerate(specs):
        path = tmp_path / f"layer-{index}.tar"
        diff_id = write_layer_tar(path, spec)
        layers.append(FileLayer(path=path, size=path.stat().st_size, diff_id=diff_id))
    config = make_config([layer.diff_id for layer in layers if layer.diff_id])
    return SourceImage(config=config, layers=layers, config_media_type=media_types.DOCKER_CONFIG)


async def _push(
    registry: MemoryRegistry,
    image: SourceImage,
    events: list[ProgressEvent],
    retry: RetryPolicy = ONE_TRY,
) -> Any:
    options = UploadOptions(retry=retry)
    pusher = Pusher(OnePool(registry), TransferManager(2), options=options)
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
    preparing = [
        e for e in events if isinstance(e, LayerProgress) and e.status is LayerStatus.PREPARING
    ]
    assert len(preparing) == 1
    assert {r.outcome for r in result.layers} == {LayerOutcome.PUSHED}


async def test_one_failed_layer_means_no_manifest(tmp_path: Path) -> None:
    specs = [LayerSpec(300_000, i) for i in range(4)]
    image = await anyio.to_thread.run_sync(_image, tmp_path, specs)
    registry = MemoryRegistry(faults=Faults(reject_body=2))
    events: list[ProgressEvent] = []

    with pytest.raises(BlobUploadInvalidError):
        await _push(registry, image, events)

    assert registry.manifests == {}
    assert registry.deleted, "the failed session was not deleted"
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


@pytest.mark.parametrize(
    ("down", "tries"),
    [
        # Every request fails: the layer's first one (nothing is known of it: a new session) is
        # tried as often as allowed.
        (
            frozenset({"head_blob", "initiate_upload", "mount_blob", "patch_blob"}),
            "initiate_upload",
        ),
        # Only its body fails: the layer's PATCH is tried as often, resuming in between.
        (frozenset({"patch_blob"}), "patch_blob"),
    ],
    ids=["registry down", "body refused"],
)
async def test_a_layer_is_tried_as_often_as_the_policy_says_and_no_more(
    tmp_path: Path, down: frozenset[str], tries: str
) -> None:
    # Over the size sent whole in the commit, so that the body goes as a PATCH.
    image = await anyio.to_thread.run_sync(_image, tmp_path, [LayerSpec(3_000_000, 5)])
    registry = MemoryRegistry(faults=Faults(unavailable=down))
    retry = replace(FAST, attempts=3)

    with pytest.raises(RegistryResponseError):
        await _push(registry, image, [], retry)

    assert registry.calls[tries] == retry.attempts
    failed = sum(registry.calls[name] for name in down)
    assert failed == retry.attempts, "each try of the layer is one request that failed"
    assert registry.manifests == {} and not registry.sessions


def test_a_manifest_over_the_registry_s_limit_is_refused_before_it_is_sent() -> None:
    manifests.check_size(b" " * manifests.MAX_MANIFEST_SIZE)
    with pytest.raises(PushError, match="over the"):
        manifests.check_size(b" " * (manifests.MAX_MANIFEST_SIZE + 1))


def _layout_image(tmp_path: Path, sizes: list[int]) -> SourceImage:
    """An image whose source fixes its blobs and its manifest, as an OCI layout does."""
    layers = []
    for index, size in enumerate(sizes):
        path = tmp_path / f"blob-{index}"
        path.write_bytes(bytes([index]) * size)
        blob = Descriptor(media_types.OCI_LAYER_GZIP, Digest.of(path.read_bytes()), size)
        layers.append(FileLayer(path, size, descriptor=blob, diff_id=Digest.of(b"tar %d" % index)))
    config = make_config([layer.diff_id for layer in layers if layer.diff_id])
    named = [layer.descriptor for layer in layers if layer.descriptor]
    manifest = manifests.schema2(config, media_types.OCI_CONFIG, named)
    return SourceImage(config, layers, media_types.OCI_CONFIG, (media_types.OCI_MANIFEST, manifest))


async def test_a_re_push_of_a_held_manifest_asks_after_each_blob_and_sends_none(
    tmp_path: Path,
) -> None:
    image = await anyio.to_thread.run_sync(_layout_image, tmp_path, [4096, 8192, 300_000])
    registry = MemoryRegistry()

    first = await _push(registry, image, [])
    assert registry.calls["head_blob"] == 1, "only the big blob is asked after on a cold push"
    sent = registry.uploads
    for layer in image.layers:
        layer.path.unlink()  # a re-push that read a layer would fail
    again = await _push(registry, image, [])

    assert {layer.outcome for layer in again.layers} == {LayerOutcome.EXISTS}
    assert registry.uploads == sent
    assert registry.calls["head_manifest"] == 2
    assert registry.calls["head_blob"] == 1 + 3 + 1, "each layer, then the config"
    assert again.digest == first.digest


@dataclass
class _ManifestAnsweredLate(MemoryRegistry):
    """Says whether it holds the manifest only once ``late_after`` has been asked after: a push
    that waited for that answer before starting any layer would never get it."""

    late_after: Digest | None = None
    asked: list[str] = field(default_factory=list)
    _blob_asked: anyio.Event | None = None

    def _blob_asked_event(self) -> anyio.Event:
        # Made by whichever comes first, the blob's HEAD or the manifest's: either order is fine.
        if self._blob_asked is None:
            self._blob_asked = anyio.Event()
        return self._blob_asked

    async def head_blob(self, repository: str, digest: Digest) -> int | Absence:
        self.asked.append(f"blob {digest}")
        if digest == self.late_after:
            self._blob_asked_event().set()
        return await super().head_blob(repository, digest)

    async def head_manifest(self, repository: str, digest: Digest, media_type: str) -> bool:
        with anyio.move_on_after(10) as waited:
            await self._blob_asked_event().wait()
        assert not waited.cancelled_caught, "no layer was asked after before the manifest"
        self._blob_asked = None  # the next push asks again
        self.asked.append("manifest answered")
        return await super().head_manifest(repository, digest, media_type)


async def test_a_re_push_asks_after_its_manifest_beside_the_layers(tmp_path: Path) -> None:
    # Only what hinges on the answer waits for it: the small blobs nothing records (sent unasked
    # on a first push) and the config. The big blob is asked after at once: one round trip less.
    image = await anyio.to_thread.run_sync(_layout_image, tmp_path, [4096, 8192, 300_000])
    small, big = [layer.descriptor for layer in image.layers[:2]], image.layers[2].descriptor
    assert big is not None and None not in small
    registry = _ManifestAnsweredLate(late_after=big.digest)
    await _push(registry, image, [])
    registry.asked.clear()

    again = await _push(registry, image, [])

    assert {layer.outcome for layer in again.layers} == {LayerOutcome.EXISTS}
    answered = registry.asked.index("manifest answered")
    assert registry.asked.index(f"blob {big.digest}") < answered
    later = [f"blob {blob.digest}" for blob in small if blob] + [f"blob {Digest.of(image.config)}"]
    assert sorted(registry.asked[answered + 1 :]) == sorted(later), registry.asked


@dataclass
class _LayerWaitsForConfig(MemoryRegistry):
    """Commits a layer only once the config is committed: a push that placed its config only
    after its layers would never get there."""

    config: Digest | None = None
    committed: list[Digest] = field(default_factory=list)
    _config_in: anyio.Event = field(default_factory=anyio.Event)

    async def commit_blob(
        self, repository: str, location: str, digest: Digest, body: bytes = b""
    ) -> None:
        if digest != self.config:
            with anyio.move_on_after(10) as waited:
                await self._config_in.wait()
            assert not waited.cancelled_caught, "the config was not placed beside the layers"
        await super().commit_blob(repository, location, digest, body)
        self.committed.append(digest)
        if digest == self.config:
            self._config_in.set()


async def test_a_first_push_sends_its_config_beside_the_layers(tmp_path: Path) -> None:
    # Only the manifest's PUT is left once the last layer is in: the config went meanwhile,
    # unasked (a registry without the image's manifest has most likely never had its config).
    image = await anyio.to_thread.run_sync(_layout_image, tmp_path, [300_000, 400_000])
    registry = _LayerWaitsForConfig(config=Digest.of(image.config))

    pushed = await _push(registry, image, [])

    assert registry.committed[0] == Digest.of(image.config)
    assert {layer.outcome for layer in pushed.layers} == {LayerOutcome.PUSHED}
    assert registry.calls["head_blob"] == 2, "the layers are asked after, the config is not"
