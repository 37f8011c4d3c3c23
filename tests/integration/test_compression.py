"""``hoist push --compression``: zstd layers in an OCI manifest, read back by skopeo; re-pushes
that find their own blobs; and the refusals, each one ``Error: …`` line.

Docker's own daemon is not asked to pull the zstd image: Debian's dockerd 20.10 cannot apply a
zstd layer ("archive/tar: invalid tar header"); Docker reads zstd from 23.0 on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import zstandard

from engine import media_types
from tests.support.clients import Hoist, Skopeo
from tests.support.registry import LocalRegistry
from tests.support.sample import (
    LayerSpec,
    SampleImage,
    write_docker_archive,
    write_oci_index_layout,
)

pytestmark = pytest.mark.integration

KiB = 1024
LAYERS = [LayerSpec(size=300 * KiB, seed=71), LayerSpec(size=0, seed=72), LayerSpec(64 * KiB, 73)]
ZSTD = ("--compression", "zstd")


def _loaded(hoist: Hoist, tmp_path: Path, target: str) -> SampleImage:
    image = write_docker_archive(tmp_path / "app.tar", LAYERS, [target], tmp_path / "work")
    hoist("load", "-i", str(tmp_path / "app.tar"))
    return image


def _push(hoist: Hoist, target: str, *flags: str) -> list[str]:
    """The plain progress lines of a push that must succeed."""
    return hoist("push", "--progress", "plain", *flags, target).stdout.splitlines()


def _manifest(skopeo: Skopeo, target: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(skopeo.raw_manifest(target))
    return document


def _statuses(lines: list[str]) -> list[str]:
    """What each layer's last line said (``Pushed``, ``Layer already exists``, …)."""
    last: dict[str, str] = {}
    for line in lines:
        layer, colon, status = line.partition(": ")
        if colon and len(layer) == 12:
            last[layer] = status
    return sorted(last.values())


def test_a_zstd_push_is_an_oci_manifest_of_zstd_layers_that_decompress_to_the_diff_ids(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    target = f"{registry.host}/compression/zstd:v1"
    image = _loaded(hoist, tmp_path, target)

    _push(hoist, target, *ZSTD)

    manifest = _manifest(skopeo, target)
    assert manifest["mediaType"] == media_types.OCI_MANIFEST
    assert manifest["config"]["mediaType"] == media_types.OCI_CONFIG
    assert manifest["config"]["digest"] == str(image.image_id)
    assert {layer["mediaType"] for layer in manifest["layers"]} == {media_types.OCI_LAYER_ZSTD}
    pulled = tmp_path / "pulled"
    copied = skopeo.run("copy", "--src-tls-verify=false", f"docker://{target}", f"dir:{pulled}")
    assert copied.returncode == 0, copied.stderr
    diff_ids = []
    for layer in manifest["layers"]:
        blob = (pulled / layer["digest"].removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
        tar = zstandard.ZstdDecompressor().decompress(blob)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    assert diff_ids == [str(diff_id) for diff_id in image.diff_ids]


def test_a_zstd_re_push_finds_its_blobs_even_with_the_push_metadata_gone(
    hoist: Hoist, hoist_root: Path, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    target = f"{registry.host}/compression/again:v1"
    _loaded(hoist, tmp_path, target)
    _push(hoist, target, *ZSTD)
    first = skopeo.digest(target)

    assert _statuses(_push(hoist, target, *ZSTD)) == ["Layer already exists"] * len(LAYERS)
    # What the compressor made of each layer, by compressor and level, is all that is left.
    shutil.rmtree(hoist_root / "distribution")
    assert (hoist_root / "layerdb" / "compressed" / "zstd-libzstd-3.json").exists()
    assert _statuses(_push(hoist, target, *ZSTD)) == ["Layer already exists"] * len(LAYERS)
    assert skopeo.digest(target) == first


def test_another_store_makes_the_same_zstd_image(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    """Deterministic: the same layers, compressor and level give the same blobs and manifest."""
    first, second = (f"{registry.host}/compression/same-{n}:v1" for n in (1, 2))
    _loaded(hoist, tmp_path, first)
    _push(hoist, first, *ZSTD, "--compression-level", "5")
    other = Hoist(tmp_path / "other-root", hoist.env)
    other("load", "-i", str(tmp_path / "app.tar"))
    other("tag", first, second)
    _push(other, second, *ZSTD, "--compression-level", "5")

    assert skopeo.digest(first) == skopeo.digest(second)


def test_gzip_and_zstd_pushes_of_one_image_each_keep_to_their_own_blobs(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    target = f"{registry.host}/compression/both:v1"
    _loaded(hoist, tmp_path, target)
    _push(hoist, target)
    gzipped = skopeo.digest(target)

    lines = _push(hoist, target, *ZSTD)
    assert _statuses(lines) == ["Pushed"] * len(LAYERS), "a gzip blob does not stand for zstd"
    assert _manifest(skopeo, target)["mediaType"] == media_types.OCI_MANIFEST

    lines = _push(hoist, target)
    assert _statuses(lines) == ["Layer already exists"] * len(LAYERS)
    manifest = _manifest(skopeo, target)
    assert manifest["mediaType"] == media_types.DOCKER_MANIFEST
    assert {layer["mediaType"] for layer in manifest["layers"]} == {media_types.DOCKER_LAYER_GZIP}
    assert skopeo.digest(target) == gzipped


@pytest.mark.parametrize("platform", [(), ("--platform", "linux/amd64")])
def test_zstd_is_refused_for_a_source_whose_own_manifest_is_docker_schema_2(
    hoist: Hoist,
    registry: LocalRegistry,
    skopeo: Skopeo,
    tmp_path: Path,
    platform: tuple[str, ...],
) -> None:
    """A Docker manifest list of schema 2 manifests goes byte for byte: it cannot name zstd."""
    layout = tmp_path / "layout"
    write_oci_index_layout(layout, [("linux", "amd64", "")], LAYERS, "v1", style="docker")
    target = f"{registry.host}/compression/refused-{len(platform)}:v1"

    result = hoist("push", "--from", str(layout), *platform, *ZSTD, target, check=False)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: zstd layers need an OCI image manifest, and the source's own manifest is "
        f"{'Docker schema 2' if platform else 'a Docker manifest list'}, pushed as it is: "
        "push it with gzip compression"
    ]
    assert not skopeo.manifest_exists(target)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--compression-level", "9"), "gzip compression level must be 0 to 3, not 9"),
        ((*ZSTD, "--compression-level", "20"), "zstd compression level must be 1 to 19, not 20"),
    ],
)
def test_a_level_the_compression_does_not_take_is_one_error_line(
    hoist: Hoist,
    registry: LocalRegistry,
    skopeo: Skopeo,
    tmp_path: Path,
    flags: tuple[str, ...],
    message: str,
) -> None:
    target = f"{registry.host}/compression/level:v1"
    _loaded(hoist, tmp_path, target)

    result = hoist("push", *flags, target, check=False)

    assert (result.returncode, result.stderr) == (1, f"Error: {message}\n")
    assert not skopeo.manifest_exists(target)
