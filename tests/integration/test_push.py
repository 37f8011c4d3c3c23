"""Push generated images to a real registry and read them back with skopeo."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import Hoist, Skopeo
from tests.support.registry import LocalRegistry
from tests.support.sample import LayerSpec, SampleImage, write_docker_archive, write_oci_layout

pytestmark = pytest.mark.integration

KiB = 1024
MiB = 1024 * KiB

#: Several layers, one of them empty and one repeated (same content twice in one image).
LAYERS = [
    LayerSpec(size=300 * KiB, seed=1),
    LayerSpec(size=0, seed=2),
    LayerSpec(size=1 * MiB, seed=3),
    LayerSpec(size=300 * KiB, seed=1),
    LayerSpec(size=64 * KiB, seed=4),
]

DIGEST_LINE = re.compile(
    r"^(?P<tag>\S+): digest: (?P<digest>sha256:[0-9a-f]{64}) size: (?P<size>\d+)$"
)


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, hex_ = digest.partition(":")
    return layout / "blobs" / algorithm / hex_


def _read_back(skopeo: Skopeo, ref: str, into: Path) -> tuple[dict[str, Any], bytes]:
    """skopeo copies what the registry holds to an OCI layout; its manifest and the raw bytes."""
    skopeo.copy_to_oci(ref, into)
    index = json.loads((into / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    raw = _blob(into, manifest_digest).read_bytes()
    return json.loads(raw), raw


def _assert_same_image(layout: Path, manifest: dict[str, Any], image: SampleImage) -> None:
    config = manifest["config"]
    assert config["digest"] == str(image.image_id)
    assert _blob(layout, config["digest"]).read_bytes() == image.config
    blobs = [_blob(layout, layer["digest"]).read_bytes() for layer in manifest["layers"]]
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() for blob in blobs]
    assert diff_ids == [str(d) for d in image.diff_ids]


def _digest_line(stdout: str) -> re.Match[str]:
    last = stdout.strip().splitlines()[-1]
    match = DIGEST_LINE.match(last)
    assert match, f"last line is not a digest line: {last!r}"
    return match


def test_load_then_push_from_store(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    target = f"{registry.host}/store/app:v1"
    image = write_docker_archive(tmp_path / "app.tar", LAYERS, [target], tmp_path / "work")

    loaded = hoist("load", "-i", str(tmp_path / "app.tar"))
    assert loaded.stdout.strip() == f"Loaded image: {target}"

    pushed = hoist("push", "--progress", "plain", target)
    lines = pushed.stdout.strip().splitlines()
    assert lines[0] == f"The push refers to repository [{registry.host}/store/app]"
    digest_line = _digest_line(pushed.stdout)
    assert digest_line["tag"] == "v1"
    assert any(line.endswith(": Pushed") for line in lines)

    manifest, raw = _read_back(skopeo, target, tmp_path / "back")
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest_line["digest"]
    assert len(raw) == int(digest_line["size"])
    assert skopeo.digest(target) == digest_line["digest"]
    _assert_same_image(tmp_path / "back", manifest, image)


def test_second_push_finds_every_layer(
    hoist: Hoist, registry: LocalRegistry, tmp_path: Path
) -> None:
    target = f"{registry.host}/again/app:v1"
    write_docker_archive(tmp_path / "app.tar", LAYERS, [target], tmp_path / "work")
    hoist("load", "-i", str(tmp_path / "app.tar"))
    first = hoist("push", "--progress", "plain", target)
    second = hoist("push", "--progress", "plain", target)

    distinct_layers = len({(spec.size, spec.seed) for spec in LAYERS})
    assert second.stdout.count(": Layer already exists") == distinct_layers
    assert ": Pushed" not in second.stdout
    assert _digest_line(first.stdout)["digest"] == _digest_line(second.stdout)["digest"]


def test_push_from_oci_layout_keeps_manifest_bytes(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    image = write_oci_layout(layout, LAYERS, ref_name="v2")
    target = f"{registry.host}/oci/app:v2"

    pushed = hoist("push", "--from", str(layout), "--progress", "plain", target)

    index = json.loads((layout / "index.json").read_text())
    source_manifest = _blob(layout, index["manifests"][0]["digest"]).read_bytes()
    assert skopeo.raw_manifest(target) == source_manifest
    assert _digest_line(pushed.stdout)["digest"] == index["manifests"][0]["digest"]
    manifest, _ = _read_back(skopeo, target, tmp_path / "back")
    _assert_same_image(tmp_path / "back", manifest, image)


def test_push_from_docker_archive_without_loading(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path, hoist_root: Path
) -> None:
    target = f"{registry.host}/archive/app:v3"
    image = write_docker_archive(tmp_path / "a.tar", LAYERS[:3], [target], tmp_path / "work")

    pushed = hoist("push", "--from", str(tmp_path / "a.tar"), "-q", target)

    digest = _digest_of_quiet(pushed.stdout, f"{target}")
    assert skopeo.digest(target) == digest
    manifest, _ = _read_back(skopeo, target, tmp_path / "back")
    _assert_same_image(tmp_path / "back", manifest, image)
    assert not (hoist_root / "repositories.json").exists()


def _digest_of_quiet(stdout: str, target: str) -> str:
    line = stdout.strip()
    assert re.fullmatch(re.escape(target) + r"@sha256:[0-9a-f]{64}", line), line
    return line.rpartition("@")[2]


def test_json_progress_is_dockers_stream(
    hoist: Hoist, registry: LocalRegistry, tmp_path: Path
) -> None:
    target = f"{registry.host}/json/app:latest"
    write_docker_archive(tmp_path / "a.tar", LAYERS[:2], [target], tmp_path / "work")
    hoist("load", "-i", str(tmp_path / "a.tar"))

    pushed = hoist("push", "--progress", "json", target)

    messages = [json.loads(line) for line in pushed.stdout.splitlines()]
    assert messages[0]["status"] == f"The push refers to repository [{registry.host}/json/app]"
    statuses = {m.get("status") for m in messages if m.get("id")}
    assert {"Preparing", "Pushing", "Pushed"} <= statuses
    aux = messages[-1]["aux"]
    assert aux["Tag"] == "latest"
    assert messages[-2]["status"] == f"latest: digest: {aux['Digest']} size: {aux['Size']}"


def test_a_corrupt_layer_fails_and_no_manifest_is_put(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, LAYERS[:3], ref_name="bad")
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_bytes())
    victim = _blob(layout, manifest["layers"][2]["digest"])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    target = f"{registry.host}/corrupt/app:bad"

    pushed = hoist("push", "--from", str(layout), "--progress", "plain", target, check=False)

    assert pushed.returncode == 1
    assert pushed.stderr.startswith("Error: ") and "digest mismatch" in pushed.stderr
    # Hoist does not hash a layout's blob again: the registry's check refused it, named here.
    assert f"expected {manifest['layers'][2]['digest']}, the registry found" in pushed.stderr
    assert "Traceback" not in pushed.stderr and pushed.stderr.count("\n") == 1
    assert not skopeo.manifest_exists(target)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["push", "127.0.0.1:1/none/such:v1"], "No such image"),
        (["push", "Bad/Name"], "invalid reference format"),
        (["push", "ubuntu@sha256:" + "a" * 64], "cannot push a digest reference"),
        (["load", "-i", "/nonexistent/archive.tar"], "/nonexistent/archive.tar"),
        (["tag", "missing:v1", "other:v1"], "No such image"),
    ],
)
def test_bad_input_is_one_error_line(hoist: Hoist, args: list[str], message: str) -> None:
    result = hoist(*args, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert message in result.stderr


def test_tag_images_rmi(hoist: Hoist, registry: LocalRegistry, tmp_path: Path) -> None:
    source = f"{registry.host}/tags/app:v1"
    image = write_docker_archive(tmp_path / "a.tar", LAYERS[:1], [source], tmp_path / "work")
    hoist("load", "-i", str(tmp_path / "a.tar"))
    hoist("tag", source, "example/app:v2")

    rows = [json.loads(line) for line in hoist("images", "--format", "json").stdout.splitlines()]
    assert {(r["Repository"], r["Tag"]) for r in rows} == {
        (f"{registry.host}/tags/app", "v1"),
        ("example/app", "v2"),
    }
    assert {r["ID"] for r in rows} == {str(image.image_id)}

    assert hoist("rmi", "example/app:v2").stdout.strip() == "Untagged: example/app:v2"
    removed = hoist("rmi", source).stdout
    assert f"Deleted: {image.image_id}" in removed
    assert hoist("images", "--format", "json").stdout.strip() == ""
