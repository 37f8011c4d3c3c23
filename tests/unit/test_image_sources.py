"""Image sources (docker-archive, OCI layout, OCI archive) read in place; the sample writer."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import tarfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest

from engine import media_types
from engine.digest import Digest
from engine.errors import DigestMismatchError, ImageSourceError, UnsafeArchiveError
from engine.image.base import CHUNK_SIZE, Layer
from engine.image.blobs import DirectoryBlobs
from engine.image.detect import ImageArchive, open_archive
from engine.image.tarsafe import index_tar
from tests.support.sample import (
    LayerSpec,
    SampleImage,
    make_config,
    write_docker_archive,
    write_layer_tar,
    write_oci_archive,
    write_oci_layout,
)

T = TypeVar("T")
SMALL = [LayerSpec(size=3000, seed=1), LayerSpec(size=0, seed=2), LayerSpec(size=5000, seed=3)]


async def off_loop(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run sample writers and tar surgery in a thread: the tests hold the loop to the same rule."""
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs))


async def stream_digest(layer: Layer, offset: int = 0) -> Digest:
    hasher = hashlib.sha256()
    async for chunk in layer.open(offset):
        assert len(chunk) <= CHUNK_SIZE
        hasher.update(chunk)
    return Digest.from_hash(hasher)


async def listing(directory: Path) -> list[str]:
    return [p.name async for p in anyio.Path(directory).iterdir()]


def tar_entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info


def write_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def rewrite_tar(
    source: Path, target: Path, change: Callable[[str, bytes], tuple[str, bytes] | None]
) -> None:
    """Copy a tar, passing each regular member through ``change`` (None drops it)."""
    entries: list[tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(source) as tar:
        for info in tar:
            data = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
            if info.isreg():
                changed = change(info.name, data)
                if changed is None:
                    continue
                info = tar_entry(changed[0], changed[1])
                data = changed[1]
            entries.append((info, data))
    write_tar(target, entries)


async def docker_sample(tmp_path: Path, tags: list[str], **kwargs: Any) -> tuple[Path, SampleImage]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    path = tmp_path / "image.tar"
    return path, await off_loop(write_docker_archive, path, SMALL, tags, work, **kwargs)


async def assert_docker_round_trip(archive: ImageArchive, sample: SampleImage) -> None:
    assert archive.kind == "docker-archive"
    image = archive.select(None)
    assert image.config == sample.config
    assert image.id == sample.image_id
    assert image.config_media_type == media_types.DOCKER_CONFIG
    assert image.manifest is None
    assert [layer.diff_id for layer in image.layers] == sample.diff_ids
    for layer in image.layers:
        assert layer.descriptor is None
        assert await stream_digest(layer) == layer.diff_id


# --- docker-archive -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_docker_archive_round_trip(tmp_path: Path) -> None:
    path, sample = await docker_sample(tmp_path, ["example.com/app:1.0"])
    async with open_archive(path) as archive:
        await assert_docker_round_trip(archive, sample)
        assert archive.images[0].names == ("example.com/app:1.0",)


@pytest.mark.anyio
async def test_docker_25_archive_with_symlinked_layers(tmp_path: Path) -> None:
    path, sample = await docker_sample(tmp_path, ["app:2"], style="blobs")
    with tarfile.open(path) as tar:
        links = [m for m in tar.getmembers() if m.issym()]
        names = tar.getnames()
    assert len(links) == len(SMALL)
    assert "index.json" in names and "oci-layout" in names
    async with open_archive(path) as archive:
        await assert_docker_round_trip(archive, sample)


@pytest.mark.anyio
async def test_layer_is_read_in_place_and_resumes_at_an_offset(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    path = tmp_path / "big.tar"
    sample = await off_loop(
        write_docker_archive, path, [LayerSpec(size=8 << 20, seed=9)], ["big:1"], work
    )
    tail = sample.layer_paths[0].read_bytes()[3_000_001:]
    async with open_archive(path) as archive:
        (layer,) = archive.select(None).layers
        assert layer.size == sample.layer_paths[0].stat().st_size
        assert await stream_digest(layer) == sample.diff_ids[0]
        assert await stream_digest(layer, offset=3_000_001) == Digest.of(tail)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "compress",
    [gzip.compress, bz2.compress, lzma.compress],
    ids=["gzip", "bzip2", "xz"],
)
async def test_compressed_docker_archive_is_decompressed_to_tmp_dir_and_cleaned_up(
    tmp_path: Path, compress: Callable[[bytes], bytes]
) -> None:
    path, sample = await docker_sample(tmp_path, ["app:1"])
    packed = tmp_path / "image.tar.packed"
    packed.write_bytes(compress(path.read_bytes()))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    async with open_archive(packed, tmp_dir=scratch) as archive:
        assert len(await listing(scratch)) == 1
        await assert_docker_round_trip(archive, sample)
    assert await listing(scratch) == []


@pytest.mark.anyio
async def test_gzip_layer_in_docker_archive_is_pushed_as_is(tmp_path: Path) -> None:
    layer_tar = tmp_path / "layer.tar"
    diff_id = await off_loop(write_layer_tar, layer_tar, LayerSpec(size=2000, seed=4))
    compressed = gzip.compress(layer_tar.read_bytes())
    config = make_config([diff_id])
    manifest = [{"Config": "config.json", "RepoTags": ["gz:1"], "Layers": ["l/layer.tar"]}]
    path = tmp_path / "gz.tar"
    write_tar(
        path,
        [
            (tar_entry("config.json", config), config),
            (tar_entry("l/layer.tar", compressed), compressed),
            (
                tar_entry("manifest.json", json.dumps(manifest).encode()),
                json.dumps(manifest).encode(),
            ),
        ],
    )
    async with open_archive(path) as archive:
        (layer,) = archive.select("gz:1").layers
    assert layer.diff_id == diff_id
    assert layer.descriptor is not None
    assert layer.descriptor.media_type == media_types.DOCKER_LAYER_GZIP
    assert layer.descriptor.digest == Digest.of(compressed)
    assert layer.descriptor.size == len(compressed) == layer.size


@pytest.mark.anyio
async def test_docker_archive_config_digest_mismatch(tmp_path: Path) -> None:
    path, sample = await docker_sample(tmp_path, ["app:1"])
    bad = tmp_path / "bad.tar"
    config_name = f"{sample.image_id.hex}.json"

    def tamper(name: str, data: bytes) -> tuple[str, bytes]:
        return (name, data.replace(b"amd64", b"arm64")) if name == config_name else (name, data)

    rewrite_tar(path, bad, tamper)
    with pytest.raises(DigestMismatchError, match=config_name):
        async with open_archive(bad):
            pass


@pytest.mark.anyio
async def test_docker_archive_layer_count_must_match_diff_ids(tmp_path: Path) -> None:
    path, _ = await docker_sample(tmp_path, ["app:1"])
    bad = tmp_path / "bad.tar"

    def drop_a_layer(name: str, data: bytes) -> tuple[str, bytes]:
        if name != "manifest.json":
            return name, data
        entries = json.loads(data)
        entries[0]["Layers"] = entries[0]["Layers"][:-1]
        return name, json.dumps(entries).encode()

    rewrite_tar(path, bad, drop_a_layer)
    with pytest.raises(ImageSourceError, match="2 layers but its config has 3 diff_ids"):
        async with open_archive(bad):
            pass


@pytest.mark.anyio
async def test_malformed_manifest_json(tmp_path: Path) -> None:
    path, _ = await docker_sample(tmp_path, ["app:1"])
    bad = tmp_path / "bad.tar"
    rewrite_tar(path, bad, lambda n, d: (n, b"[{not json") if n == "manifest.json" else (n, d))
    with pytest.raises(ImageSourceError, match=r"manifest\.json: malformed JSON"):
        async with open_archive(bad):
            pass


@pytest.mark.anyio
async def test_missing_layer_member(tmp_path: Path) -> None:
    path, _ = await docker_sample(tmp_path, ["app:1"])
    with tarfile.open(path) as tar:
        layer_name = next(n for n in tar.getnames() if n.endswith("layer.tar"))
    bad = tmp_path / "bad.tar"
    rewrite_tar(path, bad, lambda n, d: None if n == layer_name else (n, d))
    with pytest.raises(ImageSourceError, match=f"{layer_name} is missing"):
        async with open_archive(bad):
            pass


# --- select -----------------------------------------------------------------------------------


def merge_docker_archives(target: Path, sources: list[Path]) -> None:
    entries: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    manifest: list[object] = []
    for source in sources:
        with tarfile.open(source) as tar:
            for info in tar:
                data = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
                if info.name == "manifest.json":
                    manifest.extend(json.loads(data))
                else:
                    entries[info.name] = (info, data)
    raw = json.dumps(manifest).encode()
    write_tar(target, [*entries.values(), (tar_entry("manifest.json", raw), raw)])


@pytest.fixture
def three_image_archive(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    parts = []
    for n, tags in enumerate([["app:1"], ["registry.local:5000/app:latest"], ["tools:latest"]]):
        part = tmp_path / f"part{n}.tar"
        write_docker_archive(part, [LayerSpec(size=100, seed=n)], tags, work)
        parts.append(part)
    path = tmp_path / "three.tar"
    merge_docker_archives(path, parts)
    return path


@pytest.mark.anyio
async def test_select_by_tag_part_and_full_name(three_image_archive: Path) -> None:
    async with open_archive(three_image_archive) as archive:
        assert len(archive.images) == 3
        assert archive.select("1").names == ("app:1",)
        full = "registry.local:5000/app:latest"
        assert archive.select(full).names == (full,)
        assert archive.select("tools:latest").names == ("tools:latest",)


@pytest.mark.anyio
async def test_select_errors_list_the_names(three_image_archive: Path) -> None:
    async with open_archive(three_image_archive) as archive:
        with pytest.raises(ImageSourceError, match="no image named 'v9'") as missing:
            archive.select("v9")
        with pytest.raises(ImageSourceError, match="holds 3 images") as unnamed:
            archive.select(None)
        with pytest.raises(ImageSourceError, match="matches several images") as ambiguous:
            archive.select("latest")
    for error in (missing, unnamed):
        for name in ("app:1", "registry.local:5000/app:latest", "tools:latest"):
            assert name in str(error.value)
    assert "app:1" not in str(ambiguous.value)


@pytest.mark.anyio
async def test_select_one_image_ignores_the_tag(tmp_path: Path) -> None:
    path, sample = await docker_sample(tmp_path, ["app:1"])
    async with open_archive(path) as archive:
        assert archive.select("other").id == sample.image_id


# --- OCI layout and archive ---------------------------------------------------------------------


async def assert_oci_round_trip(archive: ImageArchive, layout: Path) -> None:
    index = json.loads((layout / "index.json").read_bytes())
    assert len(archive.images) == len(index["manifests"])
    for image, entry in zip(archive.images, index["manifests"], strict=True):
        manifest_bytes = (layout / "blobs/sha256" / entry["digest"].split(":")[1]).read_bytes()
        manifest = json.loads(manifest_bytes)
        config_hex = manifest["config"]["digest"].split(":")[1]
        assert image.manifest == (media_types.OCI_MANIFEST, manifest_bytes)
        assert image.config == (layout / "blobs/sha256" / config_hex).read_bytes()
        assert image.config_media_type == media_types.OCI_CONFIG
        assert image.names == (entry["annotations"]["org.opencontainers.image.ref.name"],)
        diff_ids = json.loads(image.config)["rootfs"]["diff_ids"]
        for layer, described, diff_id in zip(
            image.layers, manifest["layers"], diff_ids, strict=True
        ):
            assert layer.descriptor is not None
            assert layer.descriptor.digest == described["digest"]
            assert layer.diff_id == diff_id
            assert await stream_digest(layer) == layer.descriptor.digest


@pytest.mark.anyio
async def test_oci_layout_round_trip(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    sample = await off_loop(write_oci_layout, layout, SMALL, "v1")
    async with open_archive(layout) as archive:
        assert archive.kind == "oci-layout"
        await assert_oci_round_trip(archive, layout)
        image = archive.select(None)
    assert image.id == sample.image_id
    assert [layer.descriptor.digest for layer in image.layers if layer.descriptor] == (
        sample.layer_digests
    )


@pytest.mark.anyio
async def test_multi_image_oci_layout_and_archive(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    first = await off_loop(write_oci_layout, layout, [LayerSpec(size=700, seed=1)], "v1")
    second = await off_loop(write_oci_layout, layout, [LayerSpec(size=900, seed=2)], "v2")
    archive_path = tmp_path / "oci.tar"
    await off_loop(write_oci_archive, archive_path, layout)
    for path, kind in ((layout, "oci-layout"), (archive_path, "oci-archive")):
        async with open_archive(path) as archive:
            assert archive.kind == kind
            await assert_oci_round_trip(archive, layout)
            assert archive.select("v1").id == first.image_id
            assert archive.select("v2").id == second.image_id
            with pytest.raises(ImageSourceError, match="v1; v2"):
                archive.select("v3")


@pytest.mark.anyio
async def test_missing_blob_names_its_digest(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    sample = await off_loop(write_oci_layout, layout, SMALL, "v1")
    (layout / "blobs/sha256" / sample.layer_digests[1].hex).unlink()
    with pytest.raises(ImageSourceError, match=f"blob {sample.layer_digests[1]} is missing"):
        async with open_archive(layout):
            pass


@pytest.mark.anyio
async def test_malformed_index_json(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    await off_loop(write_oci_layout, layout, SMALL, "v1")
    (layout / "index.json").write_text('{"manifests": [')
    with pytest.raises(ImageSourceError, match=r"index\.json: malformed JSON"):
        async with open_archive(layout):
            pass


@pytest.mark.anyio
async def test_oci_config_digest_mismatch(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    sample = await off_loop(write_oci_layout, layout, SMALL, "v1")
    config_path = layout / "blobs/sha256" / sample.image_id.hex
    config_path.write_bytes(config_path.read_bytes().replace(b"amd64", b"arm64"))
    with pytest.raises(DigestMismatchError) as caught:
        async with open_archive(layout):
            pass
    assert caught.value.expected == sample.image_id
    assert caught.value.actual == Digest.of(config_path.read_bytes())


@pytest.mark.anyio
async def test_read_small_checks_digest_and_limit(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    sample = await off_loop(write_oci_layout, layout, SMALL, "v1")
    blobs = DirectoryBlobs(layout)
    assert await blobs.read_small(sample.manifest_digest) == sample.manifest
    with pytest.raises(ImageSourceError, match="over the 10-byte limit"):
        await blobs.read_small(sample.manifest_digest, limit=10)
    (layout / "blobs/sha256" / sample.manifest_digest.hex).write_bytes(b"{}")
    with pytest.raises(DigestMismatchError, match=sample.manifest_digest.hex):
        await blobs.read_small(sample.manifest_digest)


# --- unsafe and broken archives -----------------------------------------------------------------


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tar_entry(name, kind=tarfile.SYMTYPE)
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        (tar_entry("../x", b"data"), "../x"),
        (tar_entry("a/../../x", b"data"), "a/../../x"),
        (tar_entry("/etc/x", b"data"), "/etc/x"),
        (symlink("layer.tar", "../../etc/passwd"), "layer.tar"),
        (symlink("layer.tar", "/etc/passwd"), "layer.tar"),
        (symlink("layer.tar", "missing.tar"), "layer.tar"),
        (tar_entry("dev", kind=tarfile.CHRTYPE), "dev"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "escaping-link",
        "absolute-link",
        "dangling",
        "dev",
    ],
)
def test_unsafe_entries_are_refused(tmp_path: Path, entry: tarfile.TarInfo, named: str) -> None:
    path = tmp_path / "unsafe.tar"
    write_tar(path, [(tar_entry("manifest.json", b"[]"), b"[]"), (entry, b"data")])
    with pytest.raises(UnsafeArchiveError, match=named.replace(".", r"\.")):
        index_tar(path)


def test_links_inside_the_archive_resolve_to_their_target(tmp_path: Path) -> None:
    hard = tar_entry("b/hard.tar", kind=tarfile.LNKTYPE)
    hard.linkname = "blobs/data"
    path = tmp_path / "links.tar"
    write_tar(
        path,
        [
            (tar_entry("./blobs/data", b"payload"), b"payload"),
            (symlink("a/layer.tar", "../blobs/data"), b""),
            (symlink("c/chain.tar", "../a/layer.tar"), b""),
            (hard, b""),
        ],
    )
    index = index_tar(path)
    target = index.get("blobs/data")
    assert target is not None
    for name in ("a/layer.tar", "c/chain.tar", "b/hard.tar", "./a/layer.tar"):
        member = index.get(name)
        assert member is not None
        assert (member.offset, member.size) == (target.offset, target.size)
    with path.open("rb") as f:
        f.seek(target.offset)
        assert f.read(target.size) == b"payload"


def cut_points(path: Path) -> dict[str, int]:
    """Where to cut a tar: inside a header, inside a layer's data, before the end blocks."""
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    layer = max(members, key=lambda m: m.size)
    last = members[-1]
    return {
        "first-header": 100,
        "later-header": members[1].offset + 100,
        "layer-data": layer.offset_data + layer.size // 2,
        "padding": last.offset_data + last.size + 1,
        "no-end-blocks": last.offset_data + -(-last.size // 512) * 512,
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    "where", ["first-header", "later-header", "layer-data", "padding", "no-end-blocks"]
)
async def test_truncated_archive(tmp_path: Path, where: str) -> None:
    path, _ = await docker_sample(tmp_path, ["app:1"])
    raw = path.read_bytes()
    cut_path = tmp_path / "cut.tar"
    cut_path.write_bytes(raw[: cut_points(path)[where]])
    with pytest.raises(ImageSourceError, match="truncated or not a tar archive"):
        async with open_archive(cut_path):
            pass


@pytest.mark.anyio
async def test_truncated_gzip_archive(tmp_path: Path) -> None:
    path, _ = await docker_sample(tmp_path, ["app:1"])
    packed = gzip.compress(path.read_bytes())
    cut_path = tmp_path / "cut.tar.gz"
    cut_path.write_bytes(packed[: len(packed) // 2])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ImageSourceError, match="truncated or corrupt gzip data"):
        async with open_archive(cut_path, tmp_dir=scratch):
            pass
    assert await listing(scratch) == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some text, not a tar at all" * 40, "truncated or not a tar archive"),
        (b"\x28\xb5\x2f\xfd" + bytes(100), "zstd-compressed archives are not supported"),
    ],
    ids=["text", "zstd"],
)
async def test_not_an_archive(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    with pytest.raises(ImageSourceError, match=message):
        async with open_archive(path):
            pass


@pytest.mark.anyio
async def test_unknown_formats_and_missing_path(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    write_tar(plain, [(tar_entry("hello.txt", b"hi"), b"hi")])
    cases = [
        (tmp_path / "nope", "no such file or directory"),
        (tmp_path, "not an OCI image layout"),
        (plain, "neither a docker-archive"),
    ]
    for path, message in cases:
        with pytest.raises(ImageSourceError, match=message):
            async with open_archive(path):
                pass


# --- sample images ------------------------------------------------------------------------------


def test_samples_are_deterministic(tmp_path: Path) -> None:
    results = []
    for run in ("a", "b"):
        root = tmp_path / run
        (root / "work").mkdir(parents=True)
        docker = write_docker_archive(root / "d.tar", SMALL, ["app:1"], root / "work")
        oci = write_oci_layout(root / "layout", SMALL, "v1")
        write_oci_archive(root / "oci.tar", root / "layout")
        results.append(
            (
                docker.image_id,
                docker.diff_ids,
                Digest.of((root / "d.tar").read_bytes()),
                oci.manifest_digest,
                oci.layer_digests,
                Digest.of((root / "oci.tar").read_bytes()),
            )
        )
    assert results[0] == results[1]
    assert results[0][1] == write_oci_layout(tmp_path / "c", SMALL).diff_ids


def test_layer_tars_are_valid_and_seeded(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tar"
    diff_id = write_layer_tar(empty, LayerSpec(size=0, seed=1))
    assert diff_id == Digest.of(empty.read_bytes())
    with tarfile.open(empty) as tar:
        assert tar.getmembers() == []
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert write_layer_tar(a, LayerSpec(size=4096, seed=1)) != write_layer_tar(
        b, LayerSpec(size=4096, seed=2)
    )
    with tarfile.open(a) as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
        assert sum(m.size for m in files) == 4096
        assert {(m.mtime, m.uid, m.gid) for m in tar.getmembers()} == {(files[0].mtime, 0, 0)}
    # Pseudo-random content does not compress: a push benchmark measures real work.
    assert len(gzip.compress(a.read_bytes())) > 4096
