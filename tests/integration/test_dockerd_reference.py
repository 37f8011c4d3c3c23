"""Issue 14's reference: a real dockerd (Debian's ``docker.io``) pushes a sample image with the
docker CLI, and ``hoist serve`` must answer the same CLI with the same lines.

The first test pins down what dockerd prints and pushes, so that the comparison rests on
observed behaviour rather than on a remembered one. The second pushes the same archive through
both daemons to two repositories of one registry and compares what a user sees (the layer IDs,
each layer's final status, the digest line) and what landed (read back with skopeo).

What cannot match is left out on purpose: dockerd gzips with Go's compress/gzip and Hoist with
isal, so the layer blobs, and with them the manifest's digest and size, differ. Both manifests
must still name the same config and, once gunzipped, the same layers.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import Skopeo
from tests.support.docker_output import EXISTS, PUSHED, PushOutput, parse_push
from tests.support.dockerd import Daemon, DockerdUnavailable, running_dockerd
from tests.support.hoist_serve import hoist_serve_unavailable, running_hoist_serve
from tests.support.registry import LocalRegistry
from tests.support.sample import LayerSpec, SampleImage, write_docker_archive

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SOURCE = "reference/sample:v1"
TAG = "v1"


@dataclass(frozen=True)
class Landed:
    """What the registry holds for a pushed ref, as clients other than the pusher read it."""

    raw: bytes
    manifest: dict[str, Any]
    #: The sha256 of each layer blob once gunzipped, in the manifest's order.
    diff_ids: list[str]

    @property
    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(self.raw).hexdigest()}"


def landed(registry: LocalRegistry, skopeo: Skopeo, repository: str) -> Landed:
    raw = skopeo.raw_manifest(f"{registry.host}/{repository}:{TAG}")
    manifest: dict[str, Any] = json.loads(raw)
    diff_ids = [
        _gunzipped_digest(registry, repository, layer["digest"]) for layer in manifest["layers"]
    ]
    return Landed(raw, manifest, diff_ids)


def _gunzipped_digest(registry: LocalRegistry, repository: str, digest: str) -> str:
    # No proxy: nothing may stand between the test and the loopback registry.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{registry.url}/v2/{repository}/blobs/{digest}", timeout=60) as answer:
        blob = answer.read()
    return f"sha256:{hashlib.sha256(gzip.decompress(blob)).hexdigest()}"


# --- fixtures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    path: Path
    sample: SampleImage

    @property
    def layer_ids(self) -> set[str]:
        """What docker prints for each layer: its diff ID, shortened to 12 hex digits."""
        return {diff_id.hex[:12] for diff_id in self.sample.diff_ids}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """An uncompressed docker-archive of three random layers, named ``SOURCE``."""
    base = tmp_path_factory.mktemp("reference-archive")
    specs = [LayerSpec(MiB, seed=1401), LayerSpec(2 * MiB, seed=1402), LayerSpec(MiB, seed=1403)]
    sample = write_docker_archive(base / "image.tar", specs, [SOURCE], base / "layers")
    return Archive(base / "image.tar", sample)


@pytest.fixture
def dockerd(tmp_path: Path, archive: Archive) -> Iterator[Daemon]:
    """A private dockerd with the archive loaded, one per test: a daemon that pushed a layer
    before mounts it from there instead of pushing it."""
    try:
        with running_dockerd(tmp_path / "dockerd") as daemon:
            daemon.docker("load", "--input", str(archive.path))
            yield daemon
    except DockerdUnavailable as exc:
        pytest.skip(f"no dockerd to compare with: {exc}")


def push(daemon: Daemon, registry: LocalRegistry, repository: str) -> PushOutput:
    """Tag the loaded image for ``repository`` on the registry and ``docker push`` it."""
    target = f"{registry.host}/{repository}:{TAG}"
    daemon.docker("tag", SOURCE, target)
    return parse_push(daemon.docker("push", target).stdout)


def check_push(
    output: PushOutput,
    landed: Landed,
    archive: Archive,
    registry: LocalRegistry,
    repository: str,
    status: str,
) -> None:
    """The output's shape and the manifest it names, against what the registry holds."""
    assert output.repository == f"{registry.host}/{repository}"
    assert set(output.layer_ids) == archive.layer_ids
    assert len(output.layer_ids) == len(archive.sample.diff_ids)
    assert output.final_statuses == [status] * len(output.layer_ids)
    assert output.tag == TAG
    assert (output.digest, output.size) == (landed.digest, len(landed.raw))
    assert landed.manifest["config"]["digest"] == str(archive.sample.image_id)
    assert landed.diff_ids == [str(d) for d in archive.sample.diff_ids]


# --- the tests --------------------------------------------------------------------------------


def test_dockerd_pushes_the_sample(
    dockerd: Daemon, registry: LocalRegistry, skopeo: Skopeo, archive: Archive
) -> None:
    """What the comparison relies on: dockerd's lines and manifest for a cold and a no-op push."""
    repository = "reference/dockerd-alone"
    cold = push(dockerd, registry, repository)
    pushed = landed(registry, skopeo, repository)
    check_push(cold, pushed, archive, registry, repository, PUSHED)

    again = push(dockerd, registry, repository)
    check_push(again, pushed, archive, registry, repository, EXISTS)
    assert again.layer_ids == cold.layer_ids


@pytest.fixture
def hoist_serve(tmp_path: Path, archive: Archive) -> Iterator[Daemon]:
    """``hoist serve`` on a store of its own, the archive loaded through its API."""
    reason = hoist_serve_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with running_hoist_serve(tmp_path / "serve", tmp_path / "hoist-root") as daemon:
        daemon.docker("load", "--input", str(archive.path))
        yield daemon


def test_hoist_serve_prints_what_dockerd_prints(
    hoist_serve: Daemon,
    dockerd: Daemon,
    registry: LocalRegistry,
    skopeo: Skopeo,
    archive: Archive,
) -> None:
    """The same docker CLI, the same archive, two daemons, two repositories of one registry."""
    repositories = {"dockerd": "reference/via-dockerd", "hoist": "reference/via-hoist"}
    daemons = {"dockerd": dockerd, "hoist": hoist_serve}
    cold = {name: push(daemons[name], registry, repo) for name, repo in repositories.items()}
    again = {name: push(daemons[name], registry, repo) for name, repo in repositories.items()}
    manifests = {name: landed(registry, skopeo, repo) for name, repo in repositories.items()}

    for name, repository in repositories.items():
        check_push(cold[name], manifests[name], archive, registry, repository, PUSHED)
        check_push(again[name], manifests[name], archive, registry, repository, EXISTS)
    # What a user sees, line for line, but for the repository and the digest line's digest and
    # size (other gzip, other blobs: see the module's docstring). dockerd names the top layer first.
    assert cold["hoist"].layer_ids == cold["dockerd"].layer_ids
    assert cold["hoist"].final_statuses == cold["dockerd"].final_statuses
    assert again["hoist"].final_statuses == again["dockerd"].final_statuses
    assert again["hoist"].digest == cold["hoist"].digest
    # What landed: the same image, in the same kind of manifest.
    docker_manifest, hoist_manifest = manifests["dockerd"].manifest, manifests["hoist"].manifest
    assert hoist_manifest["mediaType"] == docker_manifest["mediaType"]
    assert hoist_manifest["config"] == docker_manifest["config"]
    assert [layer["mediaType"] for layer in hoist_manifest["layers"]] == [
        layer["mediaType"] for layer in docker_manifest["layers"]
    ]
    assert manifests["hoist"].diff_ids == manifests["dockerd"].diff_ids
