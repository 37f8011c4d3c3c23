"""A pushed manifest only ever names blobs that are in its repository.

A layer whose blob its source fixes (OCI layout, OCI archive, a docker-archive of gzip layers, an
index's children) is in the target only on evidence about that digest; what the store knows by
diff ID (Hoist's own compressed form, placed in another repository) is another blob. And what a
long-lived Engine placed in an earlier call is no evidence now: the registry may have lost it.
Every push here is checked against the registry itself, blob by blob, in its repository.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import anyio
import pytest

from engine import Engine
from engine.progress.events import Message, ProgressEvent
from engine.push.image import MANIFEST_RECHECK
from engine.push.result import LayerOutcome
from tests.integration.registry_api import assert_pushed_whole, delete_blob, manifest
from tests.support.clients import Hoist, Skopeo
from tests.support.registry import LocalRegistry
from tests.support.sample import (
    ZLIB_9_GZIP,
    Gzip,
    LayerSpec,
    write_docker_archive,
    write_oci_archive,
    write_oci_index_layout,
    write_oci_layout,
)

pytestmark = pytest.mark.integration

KiB = 1024
LAYERS = [LayerSpec(40 * KiB, 71), LayerSpec(3 * KiB, 72)]
DIGEST_LINE = re.compile(r"^\S+: digest: (?P<digest>sha256:[0-9a-f]{64}) size: \d+$")


def _pushed(hoist: Hoist, *args: str) -> str:
    """``hoist push …``: the digest it printed. The registry never had to refuse a manifest:
    that would be checked and repaired, hiding what this file tests (what evidence counts)."""
    answer = hoist("push", "--progress", "plain", *args)
    assert MANIFEST_RECHECK not in answer.stdout, answer.stdout
    match = DIGEST_LINE.match(answer.stdout.strip().splitlines()[-1])
    assert match, answer.stdout
    return match["digest"]


def _store_push(hoist: Hoist, registry: LocalRegistry, tmp_path: Path, repository: str) -> None:
    """Load the image and push it from the store: the store now knows Hoist's own blobs there."""
    target = f"{registry.host}/{repository}:v1"
    write_docker_archive(tmp_path / "app.tar", LAYERS, [target], tmp_path / "work")
    hoist("load", "-i", str(tmp_path / "app.tar"))
    digest = _pushed(hoist, target)
    assert_pushed_whole(registry, repository, "v1", digest)


@pytest.mark.parametrize("packed", ["layout", "archive"], ids=["oci-layout", "oci-archive"])
def test_another_compressors_layout_after_a_store_push(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path, packed: str
) -> None:
    """The issue's scenario: a mount of Hoist's own blob is no evidence for the layout's."""
    _store_push(hoist, registry, tmp_path, f"evidence-{packed}/a")
    layout = tmp_path / "layout"
    source = write_oci_layout(layout, LAYERS, ref_name="v1", gzip=ZLIB_9_GZIP)
    if packed == "archive":
        write_oci_archive(tmp_path / "layout.tar", layout)
        layout = tmp_path / "layout.tar"

    repository = f"evidence-{packed}/b"
    digest = _pushed(hoist, "--from", str(layout), f"{registry.host}/{repository}:v1")

    assert digest == str(source.manifest_digest)
    assert_pushed_whole(registry, repository, "v1", digest)
    assert skopeo.raw_manifest(f"{registry.host}/{repository}:v1") == source.manifest


def test_a_docker_archive_of_gzip_layers_after_a_store_push(
    hoist: Hoist, registry: LocalRegistry, tmp_path: Path
) -> None:
    _store_push(hoist, registry, tmp_path, "evidence-gzip-archive/a")
    gzipped = tmp_path / "gzipped.tar"
    write_docker_archive(gzipped, LAYERS, [], tmp_path / "work-gz", gzip=ZLIB_9_GZIP)
    gz_members = list((tmp_path / "work-gz").glob("*.gz"))  # the archive's own gzip layers

    repository = "evidence-gzip-archive/b"
    digest = _pushed(hoist, "--from", str(gzipped), f"{registry.host}/{repository}:v1")

    assert_pushed_whole(registry, repository, "v1", digest)
    found = manifest(registry, repository, "v1")
    assert found is not None
    own = {"sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in gz_members}
    assert {layer["digest"] for layer in found.document["layers"]} == own


def test_an_index_whose_children_share_the_stores_layers(
    hoist: Hoist, registry: LocalRegistry, tmp_path: Path
) -> None:
    _store_push(hoist, registry, tmp_path, "evidence-index/a")
    platforms = [("linux", "amd64", None), ("linux", "arm64", "v8")]
    index = write_oci_index_layout(
        tmp_path / "index", platforms, [LAYERS, LAYERS[:1]], "v1", gzip=ZLIB_9_GZIP
    )

    repository = "evidence-index/b"
    digest = _pushed(hoist, "--from", str(tmp_path / "index"), f"{registry.host}/{repository}:v1")

    assert digest == str(index.index_digest)
    assert_pushed_whole(registry, repository, "v1", digest)


@pytest.mark.parametrize(
    ("gzip", "case"), [(ZLIB_9_GZIP, "zlib"), (None, "tar")], ids=["zlib-9", "uncompressed"]
)
def test_a_store_push_after_a_layout_of_the_same_layers(
    hoist: Hoist, registry: LocalRegistry, tmp_path: Path, gzip: Gzip | None, case: str
) -> None:
    """The other way round. Another compressor's gzip blobs may stand for the store's tars; an
    uncompressed layout's blob is the tar itself, and may not, in a manifest that calls its
    layers gzip (``assert_pushed_whole`` reads each such blob)."""
    write_oci_layout(tmp_path / "layout", LAYERS, ref_name="v1", gzip=gzip)
    first = _pushed(
        hoist, "--from", str(tmp_path / "layout"), f"{registry.host}/evidence-{case}/a:v1"
    )
    assert_pushed_whole(registry, f"evidence-{case}/a", "v1", first)

    target = f"{registry.host}/evidence-{case}/b:v1"
    write_docker_archive(tmp_path / "app.tar", LAYERS, [target], tmp_path / "work")
    hoist("load", "-i", str(tmp_path / "app.tar"))
    digest = _pushed(hoist, target)

    assert_pushed_whole(registry, f"evidence-{case}/b", "v1", digest)


def test_an_uncompressed_layer_and_a_tar_of_the_same_diff_id_at_once(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    """An uncompressed layout layer's digest is its diff ID: as a transfer or ledger key it must
    not meet the store's tar of that diff ID, which Hoist compresses into another blob."""
    repository = "evidence-uncompressed/app"
    store_ref = f"{registry.host}/{repository}:store"
    write_docker_archive(tmp_path / "app.tar", LAYERS, [store_ref], tmp_path / "work")
    write_oci_layout(tmp_path / "layout", LAYERS, ref_name="layout", gzip=None)

    events: list[ProgressEvent] = []

    async def both() -> list[str]:
        async with Engine(tmp_path / "root") as engine:
            await engine.load(tmp_path / "app.tar")
            pushed = await asyncio.gather(
                engine.push(store_ref, progress=events.append),
                engine.push(
                    f"{registry.host}/{repository}:layout",
                    source=tmp_path / "layout",
                    progress=events.append,
                ),
            )
        return [str(result.digest) for result in pushed]

    store_digest, layout_digest = anyio.run(both)

    assert not [e for e in events if isinstance(e, Message) and MANIFEST_RECHECK in e.text]

    assert_pushed_whole(registry, repository, "store", store_digest)
    assert_pushed_whole(registry, repository, "layout", layout_digest)


def test_a_long_lived_engine_finds_out_a_deleted_blob(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    """What an earlier call placed is no evidence now: the blob was deleted in between, in the
    repository pushed to and in the one it could have been mounted from."""
    repository = "evidence-long-lived/app"
    targets = [f"{registry.host}/{repository}:v1", f"{registry.host}/{repository}-b:v1"]
    write_docker_archive(tmp_path / "app.tar", LAYERS, targets[:1], tmp_path / "work")

    async def push_delete_push() -> tuple[str, list[LayerOutcome]]:
        async with Engine(tmp_path / "root") as engine:
            await engine.load(tmp_path / "app.tar")
            await engine.tag(targets[0], targets[1])
            first = await engine.push_many(targets)
            assert all(item.result is not None for item in first), first
            digest = str(first[0].result.layers[0].digest) if first[0].result else ""
            for repo in (repository, f"{repository}-b"):
                assert await anyio.to_thread.run_sync(delete_blob, registry, repo, digest)
            events: list[ProgressEvent] = []
            again = await engine.push(targets[0], progress=events.append)
        assert not [e for e in events if isinstance(e, Message) and MANIFEST_RECHECK in e.text]
        return str(again.digest), [layer.outcome for layer in again.layers]

    digest, outcomes = anyio.run(push_delete_push)

    assert outcomes[0] is LayerOutcome.PUSHED, outcomes
    assert_pushed_whole(registry, repository, "v1", digest)
