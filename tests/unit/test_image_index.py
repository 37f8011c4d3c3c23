"""Multi-platform indexes (OCI index, Docker manifest list) read from OCI layouts and archives."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import pytest

from engine import media_types
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import ImageSourceError
from engine.image.base import Layer, SourceImage, SourceIndex
from engine.image.detect import open_archive
from engine.image.index import Platform
from engine.image.oci_layout import REF_NAME_ANNOTATION
from tests.support.sample import (
    LayerSpec,
    OciSampleIndex,
    write_oci_archive,
    write_oci_index_layout,
    write_oci_layout,
)

T = TypeVar("T")
PLATFORMS: list[tuple[str, str, str | None]] = [
    ("linux", "amd64", None),
    ("linux", "arm64", "v8"),
    ("linux", "arm", "v7"),
]
SHARED = LayerSpec(size=2000, seed=10)
LAYERS = [
    [SHARED, LayerSpec(size=1000, seed=11)],
    [SHARED, LayerSpec(size=1500, seed=12)],
    [SHARED, LayerSpec(size=0, seed=13)],
]


async def off_loop(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run sample writers and layout surgery in a thread: the loop stays free of file I/O."""
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs))


async def stream_digest(layer: Layer) -> Digest:
    hasher = hashlib.sha256()
    async for chunk in layer.open():
        hasher.update(chunk)
    return Digest.from_hash(hasher)


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs/sha256" / Digest.parse(digest).hex


def blob_names(layout: Path) -> set[str]:
    return {p.name for p in (layout / "blobs/sha256").iterdir()}


def rewrite_index(layout: Path, ref_name: str, change: Callable[[dict[str, Any]], None]) -> Digest:
    """Edit the index that ``index.json`` names ``ref_name``; index.json then points at the edit."""
    top = json.loads((layout / "index.json").read_bytes())
    entry = next(m for m in top["manifests"] if m["annotations"][REF_NAME_ANNOTATION] == ref_name)
    index = json.loads(blob_path(layout, entry["digest"]).read_bytes())
    change(index)
    raw = json.dumps(index).encode()
    digest = Digest.of(raw)
    blob_path(layout, digest).write_bytes(raw)
    entry.update(digest=str(digest), size=len(raw))
    (layout / "index.json").write_text(json.dumps(top))
    return digest


async def sample_layout(tmp_path: Path, **kwargs: Any) -> tuple[Path, OciSampleIndex]:
    layout = tmp_path / "layout"
    return layout, await off_loop(write_oci_index_layout, layout, PLATFORMS, LAYERS, **kwargs)


async def open_index(path: Path) -> SourceIndex:
    async with open_archive(path) as archive:
        [entry] = archive.images
    assert isinstance(entry, SourceIndex)
    return entry


async def assert_index_matches(index: SourceIndex, layout: Path, sample: OciSampleIndex) -> None:
    """The index, its children and their layers are the layout's bytes, in the index's order."""
    assert index.media_type == sample.media_type
    assert index.raw == blob_path(layout, sample.index_digest).read_bytes()
    assert index.digest == sample.index_digest
    listed = [Descriptor.from_json(m) for m in json.loads(index.raw)["manifests"]]
    assert [descriptor for descriptor, _ in index.children] == listed == sample.descriptors
    for (descriptor, image), child in zip(index.children, sample.children, strict=True):
        assert image.manifest == (
            descriptor.media_type,
            blob_path(layout, descriptor.digest).read_bytes(),
        )
        assert image.id == child.image_id
        config = json.loads(image.config)
        assert Platform.of(descriptor.platform) == Platform(
            config["os"], config["architecture"], config.get("variant")
        )
        assert [layer.diff_id for layer in image.layers] == child.diff_ids
        for layer, digest in zip(image.layers, child.layer_digests, strict=True):
            assert layer.descriptor is not None and layer.descriptor.digest == digest
            assert await stream_digest(layer) == digest


# --- reading ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_index_layout_round_trip(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path, ref_name="multi")
    index = await open_index(layout)
    assert index.names == ("multi",)
    assert index.media_type == media_types.OCI_INDEX
    await assert_index_matches(index, layout, sample)
    for _, image in index.children:
        assert image.config_media_type == media_types.OCI_CONFIG
        assert image.manifest is not None and image.manifest[0] == media_types.OCI_MANIFEST


@pytest.mark.anyio
async def test_shared_layers_are_one_blob(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path)
    first_layers = {child.layer_digests[0] for child in sample.children}
    assert len(first_layers) == 1
    expected = {sample.index_digest.hex}
    for child in sample.children:
        expected |= {child.manifest_digest.hex, child.image_id.hex}
        expected |= {d.hex for d in child.layer_digests}
    assert await off_loop(blob_names, layout) == expected


@pytest.mark.anyio
async def test_one_list_of_layers_serves_every_platform(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    sample = await off_loop(write_oci_index_layout, layout, PLATFORMS[:2], [SHARED])
    first, second = sample.children
    assert first.layer_digests == second.layer_digests
    assert first.image_id != second.image_id
    await assert_index_matches(await open_index(layout), layout, sample)


def test_per_platform_layer_lists_must_match_the_platforms(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one per platform"):
        write_oci_index_layout(tmp_path, PLATFORMS, LAYERS[:2])


@pytest.mark.anyio
async def test_samples_are_deterministic(tmp_path: Path) -> None:
    one = await off_loop(write_oci_index_layout, tmp_path / "a", PLATFORMS, LAYERS)
    two = await off_loop(write_oci_index_layout, tmp_path / "b", PLATFORMS, LAYERS)
    assert one.index == two.index
    assert await off_loop(blob_names, tmp_path / "a") == await off_loop(blob_names, tmp_path / "b")


@pytest.mark.anyio
async def test_docker_manifest_list_keeps_its_media_types(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path, style="docker")
    index = await open_index(layout)
    assert index.media_type == media_types.DOCKER_MANIFEST_LIST
    assert json.loads(index.raw)["mediaType"] == media_types.DOCKER_MANIFEST_LIST
    await assert_index_matches(index, layout, sample)
    for descriptor, image in index.children:
        assert descriptor.media_type == media_types.DOCKER_MANIFEST
        assert image.manifest is not None and image.manifest[0] == media_types.DOCKER_MANIFEST
        assert image.config_media_type == media_types.DOCKER_CONFIG
        for layer in image.layers:
            assert layer.descriptor is not None
            assert layer.descriptor.media_type == media_types.DOCKER_LAYER_GZIP
    assert index.select_platform("linux/arm/v7").id == sample.children[2].image_id


@pytest.mark.anyio
async def test_oci_archive_of_an_index_layout(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path)
    archive_path = tmp_path / "multi.tar"
    await off_loop(write_oci_archive, archive_path, layout)
    async with open_archive(archive_path) as archive:
        assert archive.kind == "oci-archive"
        [index] = archive.images
        assert isinstance(index, SourceIndex)
        await assert_index_matches(index, layout, sample)
        arm = index.select_platform("linux/arm64")
        assert all(layer.descriptor is not None for layer in arm.layers)
        assert [await stream_digest(layer) for layer in arm.layers] == (
            sample.children[1].layer_digests
        )


@pytest.mark.anyio
async def test_select_by_tag_returns_the_index_or_the_image(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    plain = await off_loop(write_oci_layout, layout, [LayerSpec(size=700, seed=1)], "v1")
    multi = await off_loop(write_oci_index_layout, layout, PLATFORMS, LAYERS, "multi")
    async with open_archive(layout) as archive:
        assert len(archive.images) == 2
        chosen = archive.select("multi")
        assert isinstance(chosen, SourceIndex) and chosen.digest == multi.index_digest
        image = archive.select("v1")
        assert isinstance(image, SourceImage) and image.id == plain.image_id
        with pytest.raises(ImageSourceError, match="holds 2 images; name one of: v1; multi"):
            archive.select(None)
        with pytest.raises(ImageSourceError, match="no image named 'v2'; it holds: v1; multi"):
            archive.select("v2")


@pytest.mark.anyio
async def test_untagged_index_is_listed_by_its_digest(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    await off_loop(write_oci_layout, layout, [LayerSpec(size=700, seed=1)], "v1")
    multi = await off_loop(write_oci_index_layout, layout, PLATFORMS, LAYERS, "multi")
    index_json = layout / "index.json"
    top = json.loads(await anyio.Path(index_json).read_bytes())
    del top["manifests"][1]["annotations"]
    await anyio.Path(index_json).write_text(json.dumps(top))
    async with open_archive(layout) as archive:
        with pytest.raises(ImageSourceError, match=f"<untagged index {multi.index_digest.short}>"):
            archive.select("v2")


@pytest.mark.anyio
async def test_index_entry_without_media_type_is_known_by_its_body(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path)
    index_json = layout / "index.json"
    top = json.loads(await anyio.Path(index_json).read_bytes())
    del top["manifests"][0]["mediaType"]
    await anyio.Path(index_json).write_text(json.dumps(top))
    index = await open_index(layout)
    assert index.media_type == media_types.OCI_INDEX
    assert index.digest == sample.index_digest


@pytest.mark.anyio
async def test_media_type_that_contradicts_the_body_is_refused(tmp_path: Path) -> None:
    layout, _ = await sample_layout(tmp_path)
    index_json = layout / "index.json"
    top = json.loads(await anyio.Path(index_json).read_bytes())
    top["manifests"][0]["mediaType"] = media_types.DOCKER_MANIFEST_LIST
    await anyio.Path(index_json).write_text(json.dumps(top))
    with pytest.raises(
        ImageSourceError, match=re.escape(f"the manifest says '{media_types.OCI_INDEX}'")
    ):
        await open_index(layout)


# --- choosing a platform ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_select_platform_exact_and_without_variant(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path)
    index = await open_index(layout)
    amd64, arm64, arm = (child.image_id for child in sample.children)
    assert index.select_platform("linux/amd64").id == amd64
    assert index.select_platform("linux/arm64/v8").id == arm64
    assert index.select_platform("linux/arm64").id == arm64
    assert index.select_platform("linux/arm/v7").id == arm
    assert index.select_platform("linux/arm").id == arm


@pytest.mark.anyio
@pytest.mark.parametrize("query", ["linux/arm64/v9", "windows/amd64", "linux/s390x"])
async def test_unknown_platform_lists_the_platforms(tmp_path: Path, query: str) -> None:
    layout, _ = await sample_layout(tmp_path, ref_name="multi")
    index = await open_index(layout)
    with pytest.raises(ImageSourceError) as caught:
        index.select_platform(query)
    message = str(caught.value)
    assert f"oci:{layout}:multi has no manifest for platform {query}" in message
    assert message.endswith("it has: linux/amd64, linux/arm64/v8, linux/arm/v7")


@pytest.mark.anyio
@pytest.mark.parametrize("query", ["linux", "linux/", "/amd64", "linux/arm/v7/x", ""])
async def test_malformed_platform_query(tmp_path: Path, query: str) -> None:
    layout, _ = await sample_layout(tmp_path)
    index = await open_index(layout)
    with pytest.raises(ImageSourceError, match="expected os/arch or os/arch/variant"):
        index.select_platform(query)


@pytest.mark.anyio
async def test_several_variants_need_the_variant(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    platforms = [("linux", "arm", "v6"), ("linux", "arm", "v7")]
    sample = await off_loop(write_oci_index_layout, layout, platforms, [SHARED])
    index = await open_index(layout)
    with pytest.raises(
        ImageSourceError,
        match=r"matches several manifests .*: linux/arm/v6, linux/arm/v7; give the variant",
    ):
        index.select_platform("linux/arm")
    assert index.select_platform("linux/arm/v6").id == sample.children[0].image_id
    assert index.select_platform("linux/arm/v7").id == sample.children[1].image_id


@pytest.mark.anyio
async def test_child_without_platform_is_kept_but_not_selectable(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path, ref_name="multi")

    def drop_platform(index: dict[str, Any]) -> None:
        del index["manifests"][0]["platform"]

    await off_loop(rewrite_index, layout, "multi", drop_platform)
    index = await open_index(layout)
    assert [image.id for _, image in index.children] == [c.image_id for c in sample.children]
    assert index.children[0][0].platform is None
    with pytest.raises(ImageSourceError) as caught:
        index.select_platform("linux/amd64")
    assert str(caught.value).endswith(
        "it has: linux/arm64/v8, linux/arm/v7 (and 1 without a platform)"
    )


def test_platform_of_a_descriptor() -> None:
    windows = {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.5458"}
    assert str(Platform.of(windows)) == "windows/amd64 (10.0.17763.5458)"
    assert Platform.of({"architecture": "amd64"}) is None
    assert Platform.of(None) is None
    assert Platform.parse("linux/arm/v7") == Platform("linux", "arm", "v7")


# --- refused and incomplete indexes ----------------------------------------------------------


@pytest.mark.anyio
async def test_nested_index_is_refused(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path, ref_name="multi")
    inner = Descriptor(media_types.OCI_INDEX, sample.index_digest, len(sample.index))

    def nest(index: dict[str, Any]) -> None:
        index["manifests"][1] = inner.to_json()

    await off_loop(rewrite_index, layout, "multi", nest)
    with pytest.raises(ImageSourceError, match=r"manifests\[1\] is itself an index; nested"):
        await open_index(layout)


@pytest.mark.anyio
async def test_nested_index_known_by_its_body_is_refused(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path, ref_name="multi")

    def nest(index: dict[str, Any]) -> None:
        index["manifests"][2] = {"digest": str(sample.index_digest), "size": len(sample.index)}

    await off_loop(rewrite_index, layout, "multi", nest)
    with pytest.raises(ImageSourceError, match=r"manifests\[2\] is itself an index; nested"):
        await open_index(layout)


@pytest.mark.anyio
async def test_missing_layer_fails_only_the_child_that_needs_it(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path)
    arm64 = sample.children[1]
    missing = arm64.layer_digests[1]
    await anyio.Path(blob_path(layout, missing)).unlink()
    index = await open_index(layout)
    assert index.select_platform("linux/amd64").id == sample.children[0].image_id
    assert index.select_platform("linux/arm/v7").id == sample.children[2].image_id
    expected = (
        f"blob {missing} is missing (from manifest {arm64.manifest_digest} for linux/arm64/v8)"
    )
    with pytest.raises(ImageSourceError, match=re.escape(expected)):
        index.select_platform("linux/arm64")
    with pytest.raises(ImageSourceError, match=re.escape(expected)):
        _ = index.children


@pytest.mark.anyio
async def test_missing_child_manifest_names_its_digest(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path)
    arm = sample.children[2]
    await anyio.Path(blob_path(layout, arm.manifest_digest)).unlink()
    index = await open_index(layout)
    expected = f"blob {arm.manifest_digest} is missing (the manifest for linux/arm/v7)"
    with pytest.raises(ImageSourceError, match=re.escape(expected)):
        index.select_platform("linux/arm/v7")
    with pytest.raises(ImageSourceError, match=re.escape(expected)):
        _ = index.children
    assert index.select_platform("linux/arm64").id == sample.children[1].image_id


@pytest.mark.anyio
async def test_missing_shared_layer_fails_every_child(tmp_path: Path) -> None:
    layout, sample = await sample_layout(tmp_path)
    shared = sample.children[0].layer_digests[0]
    await anyio.Path(blob_path(layout, shared)).unlink()
    index = await open_index(layout)
    for query in ("linux/amd64", "linux/arm64", "linux/arm"):
        with pytest.raises(ImageSourceError, match=f"blob {shared} is missing"):
            index.select_platform(query)


@pytest.mark.anyio
async def test_corrupt_child_is_refused_at_once(tmp_path: Path) -> None:
    # Missing is tolerated until used; content that does not match its digest never is.
    layout, sample = await sample_layout(tmp_path)
    config = blob_path(layout, sample.children[1].image_id)
    await anyio.Path(config).write_bytes(b"{}")
    with pytest.raises(ImageSourceError, match=str(sample.children[1].image_id)):
        await open_index(layout)
