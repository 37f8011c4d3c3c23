"""One layer's decisions against the in-memory registry: which mounts are tried, which sessions
are deleted, which evidence is forgotten (pure logic; the real registry is in tests/integration)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from engine import media_types
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.image.base import FileLayer
from engine.progress.events import LayerProgress, LayerStatus, ProgressEvent
from engine.push.layer import LayerUpload
from engine.push.ledger import BlobLedger
from engine.push.metadata_service import MetadataService
from engine.push.result import LayerOutcome, LayerResult
from engine.store import LayerMetadata, V2Metadata
from engine.transfer import TransferContext, TransferManager
from tests.support.memory_registry import MemoryMetadataStore, MemoryRegistry

pytestmark = pytest.mark.anyio

REGISTRY = "127.0.0.1:5000"


def _layer(tmp_path: Path, size: int = 50_000) -> FileLayer:
    data = random.Random(3).randbytes(size)
    path = tmp_path / "layer.bin"
    path.write_bytes(data)
    blob = Descriptor(media_types.OCI_LAYER_GZIP, Digest.of(data), len(data))
    return FileLayer(path=path, size=len(data), descriptor=blob, diff_id=Digest.of(b"its tar"))


async def _upload(
    registry: MemoryRegistry, layer: FileLayer, *records: V2Metadata
) -> tuple[LayerUpload, MetadataService]:
    assert layer.diff_id is not None
    metadata = MetadataService(MemoryMetadataStore(), hmac_key=b"")  # type: ignore[arg-type]
    await metadata.load([layer], {layer.diff_id: LayerMetadata(list(records), None)})
    upload = LayerUpload(
        client=registry,
        repository="app",
        target=f"{REGISTRY}/app",
        layer=layer,
        metadata=metadata,
        ledger=BlobLedger(),
    )
    return upload, metadata


def _in(repository: str, blob: Descriptor) -> V2Metadata:
    return V2Metadata(blob.digest, f"{REGISTRY}/{repository}", media_type=blob.media_type)


async def _run(upload: LayerUpload, events: list[ProgressEvent]) -> LayerResult:
    with anyio.fail_after(10):
        return await TransferManager(2).transfer(upload.key, upload, events.append)


async def test_every_refused_mount_s_session_but_the_last_is_deleted_and_its_record_forgotten(
    tmp_path: Path,
) -> None:
    # Over 100 KiB: Docker tries up to three mounts for such a layer, one for a smaller one.
    layer = await anyio.to_thread.run_sync(_layer, tmp_path, 200_000)
    assert layer.descriptor is not None
    stale = [_in("a", layer.descriptor), _in("b", layer.descriptor)]
    registry = MemoryRegistry()
    upload, metadata = await _upload(registry, layer, *stale)

    result = await _run(upload, [])

    assert result.outcome is LayerOutcome.PUSHED
    assert registry.calls["mount_blob"] == 2
    assert registry.deleted == ["s1"], "the first refusal's session, not the one used"
    assert layer.descriptor.digest in registry.links["app"]
    assert isinstance(metadata.store, MemoryMetadataStore)
    assert sorted(metadata.store.removed, key=str) == sorted(stale, key=str)


async def test_an_anonymous_mount_says_and_records_that_the_layer_exists(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(_layer, tmp_path)
    assert layer.descriptor is not None
    registry = MemoryRegistry()
    registry.blobs[layer.descriptor.digest] = layer.path.read_bytes()
    registry.links["elsewhere"] = {layer.descriptor.digest}
    upload, _ = await _upload(registry, layer)
    events: list[ProgressEvent] = []

    result = await _run(upload, events)

    assert result.outcome is LayerOutcome.EXISTS and result.bytes_sent == 0
    said = [e.status for e in events if isinstance(e, LayerProgress)]
    assert said == [LayerStatus.EXISTS]
    assert registry.calls["mount_blob"] == 1 and not registry.sessions


async def test_a_layer_cancelled_while_it_waits_for_a_slot_deletes_the_refused_mount_s_session(
    tmp_path: Path,
) -> None:
    layer = await anyio.to_thread.run_sync(_layer, tmp_path)
    assert layer.descriptor is not None
    registry = MemoryRegistry()
    upload, _ = await _upload(registry, layer, _in("a", layer.descriptor))
    transfers = TransferManager(1)
    holding, waiting = anyio.Event(), anyio.Event()

    async def hold_the_only_slot(ctx: TransferContext) -> None:
        await ctx.wait_started()
        holding.set()
        await anyio.sleep_forever()

    def heard(event: ProgressEvent) -> None:
        if isinstance(event, LayerProgress) and event.status is LayerStatus.WAITING:
            waiting.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(transfers.transfer, "other", hold_the_only_slot, lambda _: None)
            await holding.wait()
            group.start_soon(transfers.transfer, upload.key, upload, heard)
            await waiting.wait()
            assert registry.sessions, "the refused mount opened a session"
            group.cancel_scope.cancel()

    assert registry.deleted == ["s1"] and not registry.sessions
    assert registry.calls["patch_blob"] == 0


async def test_a_small_blob_no_record_places_in_the_target_is_sent_without_asking(
    tmp_path: Path,
) -> None:
    layer = await anyio.to_thread.run_sync(_layer, tmp_path)
    registry = MemoryRegistry()
    upload, _ = await _upload(registry, layer)

    result = await _run(upload, [])

    assert result.outcome is LayerOutcome.PUSHED
    assert registry.calls["head_blob"] == 0
    assert registry.calls["mount_blob"] == 1, "the anonymous mount opens the session"
    assert registry.calls["commit_blob"] == 1 and registry.calls["initiate_upload"] == 0


@pytest.mark.parametrize(
    "why",
    ["a record places it in the target", "the target holds the image's manifest", "it is big"],
)
async def test_a_blob_is_asked_after_before_it_is_sent(tmp_path: Path, why: str) -> None:
    size = 200_000 if why == "it is big" else 50_000
    layer = await anyio.to_thread.run_sync(_layer, tmp_path, size)
    assert layer.descriptor is not None
    registry = MemoryRegistry()
    registry.blobs[layer.descriptor.digest] = layer.path.read_bytes()
    registry.links["app"] = {layer.descriptor.digest}
    records = [_in("app", layer.descriptor)] if why.startswith("a record") else []
    upload, _ = await _upload(registry, layer, *records)
    upload = replace(upload, manifest_held=why.startswith("the target"))
    events: list[ProgressEvent] = []

    result = await _run(upload, events)

    assert result.outcome is LayerOutcome.EXISTS
    assert registry.calls["head_blob"] == 1 and registry.uploads == 0
    assert [e.status for e in events if isinstance(e, LayerProgress)] == [LayerStatus.EXISTS]
