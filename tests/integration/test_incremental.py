"""Incremental and batch pushes, counted on the wire by a recording proxy before the registry."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from engine.digest import Digest
from engine.store import metadata
from engine.store.layout import Layout
from tests.support.clients import Hoist, Skopeo
from tests.support.proxy import Proxy, running_proxy
from tests.support.registry import LocalRegistry, running_registry
from tests.support.sample import LayerSpec, write_docker_archive, write_oci_index_layout

pytestmark = pytest.mark.integration

KiB = 1024
MiB = 1024 * KiB
LAYERS = [LayerSpec(600 * KiB, 51), LayerSpec(200 * KiB, 52), LayerSpec(2 * MiB, 53)]


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[Proxy]:
    """A fresh registry behind a proxy that counts every request and body byte."""
    with (
        running_registry(tmp_path / "registry") as registry,
        running_proxy(registry.host) as proxy,
    ):
        yield proxy


#: Image configs written by this module's tests: their uploads are not layer bytes.
CONFIGS: set[str] = set()


def _layer_bytes(proxy: Proxy) -> int:
    """Body bytes of layer uploads seen by the proxy: PATCHes, and PUTs that carry a small
    blob whole — except those of image configs."""
    total = proxy.body_bytes("PATCH")
    for exchange in proxy.exchanges("PUT", "/blobs/uploads/"):
        digest = parse_qs(urlsplit(exchange.path).query).get("digest", [""])[0]
        if digest not in CONFIGS:
            total += exchange.request_body_bytes
    return total


def _config_requests(proxy: Proxy, config: str) -> dict[str, int]:
    """What the proxy saw of one config blob: its HEADs, the PUTs that sent it, its mounts."""
    heads = len(proxy.exchanges("HEAD", f"/blobs/{config}"))
    sent = 0
    for exchange in proxy.exchanges("PUT", "/blobs/uploads/"):
        if parse_qs(urlsplit(exchange.path).query).get("digest") == [config]:
            sent += 1
    mounts = len(proxy.exchanges("POST", f"mount={config}"))
    return {"HEAD": heads, "sent": sent, "mounts": mounts}


def _load(hoist: Hoist, tmp_path: Path, name: str, layers: list[LayerSpec], tags: list[str]) -> str:
    """Load an image into the store; its config digest."""
    archive = tmp_path / f"{name}.tar"
    image = write_docker_archive(archive, layers, tags, tmp_path / f"work-{name}")
    CONFIGS.add(str(image.image_id))
    hoist("load", "-i", str(archive))
    return str(image.image_id)


def _manifest_layers(skopeo: Skopeo, ref: str) -> list[dict[str, object]]:
    return list(json.loads(skopeo.raw_manifest(ref))["layers"])


def test_second_push_sends_no_layer_bytes(hoist: Hoist, wire: Proxy, tmp_path: Path) -> None:
    target = f"{wire.host}/inc/app:v1"
    _load(hoist, tmp_path, "app", LAYERS, [target])
    hoist("push", target)
    assert _layer_bytes(wire) > sum(spec.size for spec in LAYERS) * 0.9
    wire.clear()

    again = hoist("push", "--progress", "plain", target)

    assert _layer_bytes(wire) == 0
    assert again.stdout.count(": Layer already exists") == len(LAYERS)


def test_the_config_is_checked_only_when_the_registry_may_hold_it(
    hoist: Hoist, wire: Proxy, tmp_path: Path
) -> None:
    target = f"{wire.host}/inc/config:v1"
    config = _load(hoist, tmp_path, "app", LAYERS, [target])

    hoist("push", target)
    # Its layers had to be uploaded: the registry cannot have had this image, so no HEAD.
    assert _config_requests(wire, config) == {"HEAD": 0, "sent": 1, "mounts": 0}
    wire.clear()

    hoist("push", target)
    assert _config_requests(wire, config) == {"HEAD": 1, "sent": 0, "mounts": 0}


def test_one_image_under_many_names_sends_its_config_once(
    hoist: Hoist, wire: Proxy, tmp_path: Path, skopeo: Skopeo
) -> None:
    refs = [f"{wire.host}/same/{repo}:{tag}" for repo in ("a", "b") for tag in ("v1", "v2")]
    config = _load(hoist, tmp_path, "app", LAYERS[:1], refs)

    hoist("push", *refs)

    # One PUT sends it; the other repository mounts it; the second tag of each needs nothing.
    assert _config_requests(wire, config) == {"HEAD": 0, "sent": 1, "mounts": 1}
    for ref in refs:
        assert json.loads(skopeo.raw_manifest(ref))["config"]["digest"] == config


def test_push_to_a_second_repository_mounts_every_layer(
    hoist: Hoist, wire: Proxy, tmp_path: Path, skopeo: Skopeo
) -> None:
    first, second = f"{wire.host}/inc/one:v1", f"{wire.host}/inc/two:v1"
    _load(hoist, tmp_path, "app", LAYERS, [first])
    hoist("tag", first, second)
    hoist("push", first)
    wire.clear()

    pushed = hoist("push", "--progress", "plain", second)

    assert _layer_bytes(wire) == 0
    assert pushed.stdout.count(": Mounted from inc/one") == len(LAYERS)
    mounts = [e for e in wire.log if e.method == "POST" and "mount=" in e.path]
    assert len(mounts) == len(LAYERS) and all(e.status == 201 for e in mounts)
    assert _manifest_layers(skopeo, second) == _manifest_layers(skopeo, first)


def test_lost_metadata_still_finds_every_blob(hoist: Hoist, wire: Proxy, tmp_path: Path) -> None:
    """Deterministic compression: the layer's digest is known without its push metadata."""
    target = f"{wire.host}/inc/lost:v1"
    _load(hoist, tmp_path, "app", LAYERS, [target])
    hoist("push", target)
    shutil.rmtree(hoist.root / "distribution")
    wire.clear()

    again = hoist("push", "--progress", "plain", target)

    assert _layer_bytes(wire) == 0
    assert again.stdout.count(": Layer already exists") == len(LAYERS)


def test_a_batch_sends_each_shared_layer_once(
    hoist: Hoist, wire: Proxy, tmp_path: Path, skopeo: Skopeo
) -> None:
    shared = [LayerSpec(300 * KiB, 60 + i) for i in range(5)]
    refs = [f"{wire.host}/batch/image{i}:v1" for i in range(20)]
    for i, ref in enumerate(refs):
        _load(hoist, tmp_path, f"image{i}", [*shared, LayerSpec(20 * KiB, 100 + i)], [ref])

    pushed = hoist("push", *refs)

    assert pushed.stdout.count("digest: sha256:") == len(refs)
    distinct: dict[str, int] = {}
    for ref in refs:
        for layer in _manifest_layers(skopeo, ref):
            distinct[str(layer["digest"])] = int(str(layer["size"]))
    assert len(distinct) == 5 + 20
    assert _layer_bytes(wire) == sum(distinct.values())
    # Every push record of the batch was written before the command returned.
    for ref in refs:
        repository = ref.rpartition(":")[0]
        for layer in _manifest_layers(skopeo, ref):
            where = _recorded_repositories(hoist.root, str(layer["digest"]))
            assert repository in where, f"{ref}: {layer['digest']} not recorded"

    # Again: each image's records place its layers in its own repository, so every layer
    # "already exists" there, as Docker says; none is mounted again from another image's.
    wire.clear()
    again = hoist("push", "--progress", "plain", *refs)
    assert "Mounted from" not in again.stdout
    assert not wire.exchanges("POST", "/blobs/uploads/")
    assert _layer_bytes(wire) == 0


def _recorded_repositories(root: Path, digest: str) -> set[str]:
    layout = Layout(root)
    diff_id = metadata.read_diff_id_by_digest(layout, Digest.parse(digest))
    assert diff_id is not None
    return {entry.source_repository for entry in metadata.read_v2_metadata(layout, diff_id)}


def test_one_failing_image_does_not_stop_the_batch(
    hoist: Hoist, wire: Proxy, tmp_path: Path
) -> None:
    good = [f"{wire.host}/batch/good{i}:v1" for i in range(3)]
    for i, ref in enumerate(good):
        _load(hoist, tmp_path, f"good{i}", [LayerSpec(50 * KiB, 200 + i)], [ref])
    missing = f"{wire.host}/batch/missing:v1"

    pushed = hoist("push", good[0], missing, good[1], good[2], check=False)

    assert pushed.returncode == 1
    assert pushed.stdout.count("digest: sha256:") == 3
    assert "IMAGE" in pushed.stdout and "failed" in pushed.stdout
    assert pushed.stderr.strip() == f"Error: {missing}: No such image: {missing}"


def test_all_tags(hoist: Hoist, wire: Proxy, tmp_path: Path) -> None:
    tags = [f"{wire.host}/tags/app:{t}" for t in ("v1", "v2", "latest")]
    _load(hoist, tmp_path, "app", LAYERS[:1], tags)

    pushed = hoist("push", "-a", f"{wire.host}/tags/app")

    for tag in ("v1", "v2", "latest"):
        assert f"{tag}: digest: sha256:" in pushed.stdout
    assert _layer_bytes(wire) < 2 * LAYERS[0].size

    refused = hoist("push", "-a", f"{wire.host}/tags/none", check=False)
    assert refused.returncode == 1
    assert "An image does not exist locally with the tag" in refused.stderr


def test_no_tag_means_latest(hoist: Hoist, wire: Proxy, tmp_path: Path) -> None:
    _load(hoist, tmp_path, "app", LAYERS[:1], [f"{wire.host}/tags/plain:latest"])

    pushed = hoist("push", "--progress", "plain", f"{wire.host}/tags/plain")

    assert pushed.stdout.splitlines()[0] == "Using default tag: latest"
    assert "latest: digest: sha256:" in pushed.stdout


PLATFORMS = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]


def test_multi_platform_index_is_read_back_whole(
    hoist: Hoist, registry: LocalRegistry, tmp_path: Path, skopeo: Skopeo
) -> None:
    layout = tmp_path / "multi"
    sample = write_oci_index_layout(layout, PLATFORMS, LAYERS[:2], ref_name="v1")
    target = f"{registry.host}/multi/app:v1"

    pushed = hoist("push", "--from", str(layout), "--progress", "plain", target)

    assert f"v1: digest: {sample.index_digest}" in pushed.stdout
    assert skopeo.raw_manifest(target) == sample.index
    copied = skopeo.run(
        "copy", "--all", "--src-tls-verify=false", f"docker://{target}", f"oci:{tmp_path / 'back'}"
    )
    assert copied.returncode == 0, copied.stderr


def test_platform_pushes_one_child(
    hoist: Hoist, registry: LocalRegistry, tmp_path: Path, skopeo: Skopeo
) -> None:
    layout = tmp_path / "multi"
    sample = write_oci_index_layout(layout, PLATFORMS, LAYERS[:2], ref_name="v1")
    target = f"{registry.host}/multi/arm:v1"

    hoist("push", "--from", str(layout), "--platform", "linux/arm/v7", target)

    pushed = json.loads(skopeo.raw_manifest(target))
    assert pushed["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{target}"],
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(inspected.stdout)
    assert (config["architecture"], config.get("variant")) == ("arm", "v7")
    assert sample.index_digest not in skopeo.raw_manifest(target).decode()
