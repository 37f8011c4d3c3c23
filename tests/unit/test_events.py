"""The progress contract a program relies on without parsing strings: statuses as an enum in
Docker's words, one layer identity shared by events and results, byte counts that say what they
count, "Waiting" only when waiting, and one last event on every ending of a push."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import media_types
from engine.api import Engine
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import DeniedError
from engine.image.base import FileLayer, SourceImage
from engine.progress.events import (
    LayerProgress,
    LayerStatus,
    Measure,
    ProgressEvent,
    PushCancelled,
    PushComplete,
    PushEnded,
    PushFailed,
    mounted,
    pushing,
    retrying,
)
from engine.progress.jsonstream import JsonRenderer
from engine.push import layer as layer_module
from engine.push.layer import LayerUpload, identity
from engine.push.ledger import BlobLedger
from engine.push.metadata_service import MetadataService
from engine.push.pusher import Pusher
from engine.push.result import LayerResult
from engine.push.upload import UploadOptions
from engine.reference import Reference, parse_normalized_named
from engine.retry import RetryPolicy
from engine.transfer import TransferContext, TransferManager
from tests.support.memory_registry import MemoryMetadataStore, MemoryRegistry, OnePool
from tests.support.sample import LayerSpec, make_config, write_layer_tar

pytestmark = pytest.mark.anyio

LAYER = Digest.of(b"a layer")
REF = "localhost:5000/app:v1"


# --- statuses ---


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (LayerProgress(LAYER, LayerStatus.PREPARING), "Preparing"),
        (LayerProgress(LAYER, LayerStatus.WAITING), "Waiting"),
        (pushing(LAYER, 1, 2, Measure.TAR), "Pushing"),
        (LayerProgress(LAYER, LayerStatus.PUSHED), "Pushed"),
        (LayerProgress(LAYER, LayerStatus.EXISTS), "Layer already exists"),
        (mounted(LAYER, "library/base"), "Mounted from library/base"),
        (retrying(LAYER, 5), "Retrying in 5 seconds"),
        (retrying(LAYER, 1), "Retrying in 1 second"),
    ],
)
def test_every_status_is_an_enum_member_drawn_in_docker_s_words(
    event: LayerProgress, words: str
) -> None:
    assert isinstance(event.status, LayerStatus)
    assert event.text == words
    out = io.StringIO()
    JsonRenderer(out).handle(event)
    assert json.loads(out.getvalue())["status"] == words


def test_a_parameterised_status_keeps_its_parameter_typed() -> None:
    assert mounted(LAYER, "library/base").source == "library/base"
    assert retrying(LAYER, 3).retry_in == 3
    assert LayerProgress(LAYER, LayerStatus.PUSHED).id == LAYER.hex[:12]


def test_the_three_endings_are_push_ended_and_compare_without_the_error() -> None:
    error = DeniedError("denied", status=403)
    endings = [
        PushComplete("localhost:5000/app", "v1", LAYER, 1),
        PushFailed("denied", REF, error),
        PushCancelled(REF),
    ]
    assert all(isinstance(event, PushEnded) for event in endings)
    assert PushFailed("denied", REF, error) == PushFailed("denied", REF)
    assert not isinstance(LayerProgress(LAYER, LayerStatus.PUSHED), PushEnded)


# --- one identity, counted bytes ---


def _fixed_layer(tmp_path: Path) -> FileLayer:
    """A layer its source holds as a blob (an OCI layout's): pushed as it is."""
    data = random.Random(5).randbytes(30_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    blob = Descriptor(media_types.OCI_LAYER_GZIP, Digest.of(data), len(data))
    return FileLayer(path=path, size=len(data), descriptor=blob)


def _mixed_image(tmp_path: Path) -> SourceImage:
    """A tar to compress (as the store holds one) and a fixed blob without a known diff ID."""
    tar = tmp_path / "layer.tar"
    diff_id = write_layer_tar(tar, LayerSpec(40_000, 1))
    layers = [FileLayer(path=tar, size=tar.stat().st_size, diff_id=diff_id), _fixed_layer(tmp_path)]
    config = make_config([diff_id, Digest.of(b"unknown")])
    return SourceImage(config=config, layers=layers, config_media_type=media_types.DOCKER_CONFIG)


async def _push(image: SourceImage, events: list[ProgressEvent]) -> list[LayerResult]:
    pusher = Pusher(OnePool(MemoryRegistry()), TransferManager(2))
    with anyio.fail_after(30):
        result = await pusher.push(parse_normalized_named(REF), image, events.append)
    return result.layers


async def test_events_and_results_join_on_the_layer_s_identity(tmp_path: Path) -> None:
    image = await anyio.to_thread.run_sync(_mixed_image, tmp_path)
    events: list[ProgressEvent] = []

    results = await _push(image, events)

    tar, fixed = image.layers
    assert fixed.descriptor is not None
    assert [r.layer for r in results] == [tar.diff_id, fixed.descriptor.digest]
    assert [r.layer for r in results] == [identity(layer) for layer in image.layers]
    by_layer = {r.layer: r for r in results}
    said = [e for e in events if isinstance(e, LayerProgress)]
    assert {e.layer for e in said} == set(by_layer)
    for event in said:
        assert event.id == by_layer[event.layer].id == event.layer.short


async def test_byte_counts_say_whether_they_count_the_tar_or_the_blob(tmp_path: Path) -> None:
    image = await anyio.to_thread.run_sync(_mixed_image, tmp_path)
    events: list[ProgressEvent] = []

    results = await _push(image, events)

    tar, fixed = image.layers
    counts = [e for e in events if isinstance(e, LayerProgress) and e.status is LayerStatus.PUSHING]
    of_tar = [e for e in counts if e.layer == tar.diff_id]
    of_blob = [e for e in counts if e.layer == identity(fixed)]
    assert {(e.measure, e.total) for e in of_tar} == {(Measure.TAR, tar.size)}
    assert {(e.measure, e.total) for e in of_blob} == {(Measure.BLOB, results[1].size)}
    assert of_tar[-1].current == tar.size and of_blob[-1].current == fixed.size
    assert results[0].size != tar.size, "the tar was compressed: the blob's size differs"
    others = [e for e in events if isinstance(e, LayerProgress) and e not in counts]
    assert all((e.measure, e.current, e.total) == (None, None, None) for e in others)


async def test_a_layer_s_count_is_told_first_and_last_and_between_at_docker_s_pace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock that stands still: of the dozen 256 KiB steps only the first and last are told.
    monkeypatch.setattr(layer_module, "monotonic", lambda: 1000.0)
    data = random.Random(6).randbytes(3 << 20)  # streamed, not sent whole in the commit
    path = tmp_path / "big.bin"
    await anyio.to_thread.run_sync(path.write_bytes, data)
    blob = Descriptor(media_types.OCI_LAYER_GZIP, Digest.of(data), len(data))
    layer = FileLayer(path=path, size=len(data), descriptor=blob)
    config = make_config([Digest.of(b"unknown")])
    image = SourceImage(config=config, layers=[layer], config_media_type=media_types.DOCKER_CONFIG)
    events: list[ProgressEvent] = []

    await _push(image, events)

    counts = [e for e in events if isinstance(e, LayerProgress) and e.status is LayerStatus.PUSHING]
    assert [e.current for e in counts] == [0, len(data)]


# --- "Waiting" only when waiting ---


async def _layer_upload(tmp_path: Path) -> LayerUpload:
    layer = await anyio.to_thread.run_sync(_fixed_layer, tmp_path)
    metadata = MetadataService(MemoryMetadataStore(), hmac_key=b"")  # type: ignore[arg-type]
    await metadata.load([layer], {})
    return LayerUpload(
        client=MemoryRegistry(),
        repository="app",
        target="localhost:5000/app",
        layer=layer,
        metadata=metadata,
        ledger=BlobLedger(),
        options=UploadOptions(retry=RetryPolicy(attempts=1)),
    )


def _statuses(events: list[ProgressEvent]) -> list[LayerStatus]:
    said = [e.status for e in events if isinstance(e, LayerProgress)]
    return [status for i, status in enumerate(said) if i == 0 or said[i - 1] is not status]


async def test_a_layer_with_a_free_slot_never_says_waiting(tmp_path: Path) -> None:
    upload = await _layer_upload(tmp_path)
    events: list[ProgressEvent] = []

    with anyio.fail_after(10):
        await TransferManager(1).transfer(upload.key, upload, events.append)

    assert _statuses(events) == [LayerStatus.PUSHING, LayerStatus.PUSHED]


async def test_a_layer_says_waiting_while_every_slot_is_taken(tmp_path: Path) -> None:
    upload = await _layer_upload(tmp_path)
    transfers = TransferManager(1)
    holding, release, heard = anyio.Event(), anyio.Event(), anyio.Event()
    events: list[ProgressEvent] = []

    def hear(event: ProgressEvent) -> None:
        events.append(event)
        heard.set()

    async def hold_the_only_slot(ctx: TransferContext) -> None:
        await ctx.wait_started()
        holding.set()
        await release.wait()

    async def layer() -> None:
        await transfers.transfer(upload.key, upload, hear)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(transfers.transfer, "other", hold_the_only_slot, hear)
            await holding.wait()
            group.start_soon(layer)
            await heard.wait()
            release.set()

    assert _statuses(events) == [LayerStatus.WAITING, LayerStatus.PUSHING, LayerStatus.PUSHED]


# --- one last event, however a push ends ---


async def _engine_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inner: Any
) -> tuple[list[ProgressEvent], BaseException | None]:
    """``Engine.push`` with the push itself replaced by ``inner``; its events and its error."""
    events: list[ProgressEvent] = []
    heard = asyncio.Event()

    def hear(event: ProgressEvent) -> None:
        events.append(event)
        heard.set()

    async with Engine(tmp_path / "root", config_dir=tmp_path / "config") as engine:
        monkeypatch.setattr(engine, "_push", inner)
        task = asyncio.create_task(engine.push(REF, progress=hear))
        with anyio.fail_after(10):
            await heard.wait()
            task.cancel()  # a push still running is cancelled; a finished one is unaffected
            error = (await asyncio.gather(task, return_exceptions=True))[0]
    return events, error if isinstance(error, BaseException) else None


async def test_a_failed_push_ends_with_push_failed_carrying_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = DeniedError("denied: no", status=403)

    async def refused(*_: Any) -> None:
        raise denied

    events, error = await _engine_push(tmp_path, monkeypatch, refused)

    assert error is denied
    assert events == [PushFailed("denied: no", REF)]
    assert isinstance(events[-1], PushFailed) and events[-1].error is denied


async def test_a_push_that_hits_a_bug_still_ends_with_push_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    events, error = await _engine_push(tmp_path, monkeypatch, broken)

    assert isinstance(error, RuntimeError)
    assert events == [PushFailed("a bug", REF)]


async def test_a_cancelled_push_ends_with_push_cancelled_before_it_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def endless(ref: Reference, source: Any, platform: Any, sink: Any, *_: Any) -> None:
        sink(LayerProgress(LAYER, LayerStatus.PREPARING))
        await anyio.sleep_forever()

    events, error = await _engine_push(tmp_path, monkeypatch, endless)

    assert isinstance(error, asyncio.CancelledError)
    assert events == [LayerProgress(LAYER, LayerStatus.PREPARING), PushCancelled(REF)]


@pytest.mark.parametrize("stop", [OSError("no room"), asyncio.CancelledError()])
async def test_every_push_of_a_batch_ends_even_when_none_began(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: BaseException
) -> None:
    refs = ["localhost:5000/a:1", "localhost:5000/b:1"]
    events: list[ProgressEvent] = []

    @contextlib.asynccontextmanager
    async def unwritable() -> AsyncIterator[None]:
        raise stop
        yield  # pragma: no cover

    async with Engine(tmp_path / "root", config_dir=tmp_path / "config") as engine:
        monkeypatch.setattr(engine.store, "batched_records", unwritable)
        with pytest.raises(type(stop)):
            await engine.push_many(refs, progress=events.append)

    if isinstance(stop, Exception):
        assert events == [PushFailed("no room", ref) for ref in refs]
    else:
        assert events == [PushCancelled(ref) for ref in refs]


async def test_push_events_ends_with_the_push_s_last_event_then_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = DeniedError("denied: no", status=403)

    async def refused(ref: Reference, source: Any, platform: Any, sink: Any, *_: Any) -> None:
        sink(LayerProgress(LAYER, LayerStatus.PREPARING))
        raise denied

    seen: list[ProgressEvent] = []
    async with Engine(tmp_path / "root", config_dir=tmp_path / "config") as engine:
        monkeypatch.setattr(engine, "_push", refused)
        with anyio.fail_after(10), pytest.raises(DeniedError):
            async for event in engine.push_events(REF):
                seen.append(event)

    assert seen == [LayerProgress(LAYER, LayerStatus.PREPARING), PushFailed("denied: no", REF)]
