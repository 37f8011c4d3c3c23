"""The library: ``Engine`` pushes to a real registry; what landed is read back with skopeo."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from engine import Engine, LayerProgress, PushComplete
from engine.progress.events import LayerStatus, ProgressEvent
from engine.push.result import LayerOutcome
from tests.support.clients import Skopeo
from tests.support.registry import LocalRegistry, running_registry
from tests.support.sample import LayerSpec, write_docker_archive

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MiB = 1024 * 1024


async def _archive(path: Path, specs: list[LayerSpec], tag: str) -> None:
    await anyio.to_thread.run_sync(
        lambda: write_docker_archive(path, specs, [tag], path.parent / "work")
    )


async def test_engine_pushes_a_64_mib_layer(
    registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    target = f"{registry.host}/lib/big:v1"
    specs = [LayerSpec(64 * MiB, 11), LayerSpec(2 * MiB, 12)]
    await _archive(tmp_path / "big.tar", specs, target)
    queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()

    async with Engine(tmp_path / "root") as engine:
        assert await engine.load(tmp_path / "big.tar") == [f"Loaded image: {target}"]
        result = await engine.push(target, progress=queue)

    events = [queue.get_nowait() for _ in range(queue.qsize())]
    assert result.tag == "v1" and result.repository == f"{registry.host}/lib/big"
    assert [layer.outcome for layer in result.layers] == [LayerOutcome.PUSHED] * 2
    assert result.bytes_sent == sum(layer.size for layer in result.layers)
    pushing = [
        e for e in events if isinstance(e, LayerProgress) and e.status is LayerStatus.PUSHING
    ]
    for layer in result.layers:
        # Told from 0, in order, up to the whole tar; how often between, the pace decides
        # (tests/unit/test_events.py holds its clock still).
        counted = [e.current for e in pushing if e.layer == layer.layer]
        totals = {e.total for e in pushing if e.layer == layer.layer}
        assert counted[0] == 0 and counted == sorted(counted) and [counted[-1]] == list(totals)
    assert events[-1] == PushComplete(result.repository, "v1", result.digest, result.size)

    raw = await anyio.to_thread.run_sync(skopeo.raw_manifest, target)
    assert hashlib.sha256(raw).hexdigest() == result.digest.hex
    await anyio.to_thread.run_sync(skopeo.copy_to_oci, target, tmp_path / "back")
    manifest = json.loads(raw)
    for layer, diff_id in zip(manifest["layers"], [r.diff_id for r in result.layers], strict=True):
        blob = tmp_path / "back" / "blobs" / "sha256" / layer["digest"].split(":")[1]
        data = await anyio.to_thread.run_sync(blob.read_bytes)
        assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == diff_id


@pytest.fixture
def logged_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A registry of its own that logs every request, to count what went over the wire."""
    with running_registry(tmp_path / "registry", access_log=True) as registry:
        yield registry


async def test_push_events_iterates_and_shares_uploads(
    logged_registry: LocalRegistry, tmp_path: Path
) -> None:
    """Two pushes of one image to one repository at once: one upload per layer, both complete."""
    registry = logged_registry
    target = f"{registry.host}/lib/shared:v1"
    specs = [LayerSpec(4 * MiB, 21), LayerSpec(MiB, 22)]
    await _archive(tmp_path / "s.tar", specs, target)

    async with Engine(tmp_path / "root", max_concurrent_uploads=1) as engine:
        await engine.load(tmp_path / "s.tar")
        await engine.tag(target, f"{registry.host}/lib/shared:v2")
        image_id = await engine.store.resolve(target)

        async def collect(ref: str) -> list[object]:
            return [event async for event in engine.push_events(ref)]

        first, second = await asyncio.gather(
            collect(target), collect(f"{registry.host}/lib/shared:v2")
        )
    log = await anyio.Path(registry.log_path).read_text()

    for events, tag in ((first, "v1"), (second, "v2")):
        assert isinstance(events[-1], PushComplete) and events[-1].tag == tag
    assert first[-1].digest == second[-1].digest  # type: ignore[attr-defined]
    commits = [line for line in log.splitlines() if '"PUT /v2/lib/shared/blobs/uploads/' in line]
    committed = Counter(line.partition("digest=")[2].split()[0] for line in commits)
    layers = {digest: n for digest, n in committed.items() if digest != image_id}
    assert len(layers) == len(specs) and set(layers.values()) == {1}, committed
    for events in (first, second):
        done = {
            e.id for e in events if isinstance(e, LayerProgress) and e.status is LayerStatus.PUSHED
        }
        assert len(done) == len(specs)


@pytest.mark.filterwarnings("error")
async def test_a_blob_sent_whole_in_its_commit_raises_no_warning(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    # Over aiohttp's 1 MiB limit for a raw bytes body, under Hoist's 2 MiB for a blob sent
    # whole in its PUT: aiohttp would warn "Sending a large body directly with raw bytes".
    target = f"{registry.host}/lib/whole:v1"
    await _archive(tmp_path / "whole.tar", [LayerSpec(3 * MiB // 2, 21)], target)

    async with Engine(tmp_path / "root") as engine:
        result = await engine.push(target, source=tmp_path / "whole.tar")

    assert [layer.outcome for layer in result.layers] == [LayerOutcome.PUSHED]
    assert MiB < result.layers[0].size < 2 * MiB
