"""Pushes through a seeded fault-injecting proxy in front of a real registry.

Every push must complete and read back with skopeo; what Hoist sent is counted by the proxy.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from engine import Engine
from engine.errors import ImageSourceError, RegistryResponseError
from engine.progress.events import LayerProgress
from engine.push.result import LayerOutcome, PushResult
from engine.registry.pool import Timeouts
from engine.retry import Backoff, RetryPolicy
from tests.integration.registry_api import assert_pushed_whole, manifest
from tests.support.clients import ROOT, Skopeo
from tests.support.policies import FAST
from tests.support.proxy import Fault, FaultPlan, Proxy, running_proxy
from tests.support.registry import LocalRegistry, running_registry
from tests.support.sample import LayerSpec, write_docker_archive, write_oci_layout

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MiB = 1024 * 1024
LAYERS = [LayerSpec(3 * MiB, 71), LayerSpec(2 * MiB, 72), LayerSpec(MiB, 73), LayerSpec(0, 74)]
#: Enough tries for every fault a plan can inject, and quick waits.
PATIENT = RetryPolicy(attempts=12, backoff=Backoff(initial=0.01, maximum=0.05))


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path / "registry") as registry:
        yield registry


@pytest.fixture
def proxy(backend: LocalRegistry) -> Iterator[Proxy]:
    with running_proxy(backend.host, seed=1234) as running:
        yield running
        assert running.errors == []


async def _engine_push(
    tmp_path: Path, target: str, source: str = "store", **options: object
) -> tuple[PushResult, int]:
    """Push a sample image, loaded into the store (its layers compressed by the push) or from
    an OCI layout (gzip blobs streamed from their files as they lie); the result, and the bytes of
    its distinct blobs."""
    archive, layout = tmp_path / "image.tar", tmp_path / "layout"
    if source == "layout":
        await anyio.to_thread.run_sync(lambda: write_oci_layout(layout, LAYERS, "v1"))
    else:
        await anyio.to_thread.run_sync(
            lambda: write_docker_archive(archive, LAYERS, [target], tmp_path / "work")
        )
    async with Engine(tmp_path / "root", config_dir=tmp_path / "config", **options) as engine:  # type: ignore[arg-type]
        if source == "layout":
            result = await engine.push(target, source=layout)
        else:
            await engine.load(archive)
            result = await engine.push(target)
    payload = sum({layer.digest: layer.size for layer in result.layers}.values())
    return result, payload


def _uploaded(proxy: Proxy) -> int:
    """Every body byte Hoist sent towards blob uploads (PATCHes, and PUTs carrying bodies)."""
    return proxy.body_bytes("PATCH") + proxy.body_bytes("PUT", path_contains="/blobs/uploads/")


def _reads_back(skopeo: Skopeo, ref: str, result: PushResult) -> None:
    assert skopeo.digest(ref) == str(result.digest)
    manifest = json.loads(skopeo.raw_manifest(ref))
    assert [layer["digest"] for layer in manifest["layers"]] == [
        str(r.digest) for r in result.layers
    ]


@pytest.mark.parametrize(
    ("source", "chunk_size"), [("store", None), ("store", 512 * 1024), ("layout", None)]
)
async def test_faults_that_keep_the_session_cost_almost_nothing(
    proxy: Proxy,
    skopeo: Skopeo,
    tmp_path: Path,
    source: str,
    chunk_size: int | None,
    anyio_backend: str,
) -> None:
    proxy.faults = FaultPlan(
        rates={"status": 0.25, "reset_after_headers": 0.1},
        max_faults=8,
        retry_after=1,
    )
    target = f"{proxy.host}/faults/keep:v1"

    result, payload = await _engine_push(
        tmp_path, target, source, retry=PATIENT, chunk_size=chunk_size
    )

    assert proxy.faults_applied > 0
    await anyio.to_thread.run_sync(_reads_back, skopeo, target, result)
    sent = _uploaded(proxy)
    print(f"\nchunk_size={chunk_size}: {proxy.faults_applied} faults, sent {sent} for {payload}")
    assert sent <= 1.2 * payload


async def test_a_429_is_honoured_and_shown(
    proxy: Proxy, skopeo: Skopeo, tmp_path: Path, anyio_backend: str
) -> None:
    proxy.faults = FaultPlan(
        schedule={0: "status"}, statuses=(429,), retry_after=1, methods={"PATCH"}, max_faults=1
    )
    target = f"{proxy.host}/faults/slow:v1"
    archive = tmp_path / "image.tar"
    await anyio.to_thread.run_sync(
        lambda: write_docker_archive(archive, LAYERS[:1], [target], tmp_path / "work")
    )
    events: list[object] = []

    async with Engine(tmp_path / "root", retry=FAST) as engine:
        await engine.load(archive)
        await engine.push(target, progress=events.append)

    statuses = [e.text for e in events if isinstance(e, LayerProgress)]
    assert "Retrying in 1 second" in statuses
    patches = [e for e in proxy.log if e.method == "PATCH"]
    assert [e.status for e in patches] == [429, 202]
    assert patches[1].started_at - patches[0].finished_at >= 0.9, "Retry-After was not honoured"


@pytest.mark.parametrize("source", ["store", "layout"])
async def test_resets_mid_body_and_stalls_still_finish(
    proxy: Proxy, skopeo: Skopeo, tmp_path: Path, source: str, anyio_backend: str
) -> None:
    proxy.faults = FaultPlan(
        rates={"reset_mid_body": 0.3, "stall": 0.1},
        stall_seconds=30,
        max_faults=6,
    )
    target = f"{proxy.host}/faults/broken:v1"

    result, payload = await _engine_push(
        tmp_path, target, source, retry=PATIENT, timeouts=Timeouts(connect=5, read=1)
    )

    assert proxy.faults_applied > 0
    await anyio.to_thread.run_sync(_reads_back, skopeo, target, result)
    print(f"\nresend ratio after {proxy.faults_applied} faults: {_uploaded(proxy) / payload:.2f}")


def test_cancelling_a_push_leaves_nothing_behind(
    backend: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    """SIGTERM and Ctrl-C on a throttled push: exit 130, no manifest, every session deleted.

    CNCF Distribution 2.8 cannot delete a session whose PATCH broke mid-body: its dispatcher
    closes the upload before cancelling it, so the cancel fails and the session stays until its
    upload purging runs. Every other session must be gone.
    """
    archive = tmp_path / "image.tar"
    write_docker_archive(archive, LAYERS, ["x/y:z"], tmp_path / "work")
    hoist = [sys.executable, str(ROOT / "cli.py"), "--root", str(tmp_path / "root")]
    subprocess.run([*hoist, "load", "-i", str(archive)], check=True, capture_output=True)
    plan = FaultPlan(rates={"throttle": 1.0}, throttle_rate=256 * 1024, max_faults=100)
    with running_proxy(backend.host, faults=plan) as proxy:
        for number, sig in enumerate((signal.SIGTERM, signal.SIGINT)):
            proxy.clear()
            target = f"{proxy.host}/cancel/app{number}:v1"
            subprocess.run([*hoist, "tag", "x/y:z", target], check=True)
            process = _pushing(hoist, target)
            time.sleep(0.5)  # some bytes in flight; not an assertion
            sent_at = time.monotonic()
            process.send_signal(sig)
            _, stderr = process.communicate(timeout=30)
            took = time.monotonic() - sent_at
            print(f"\n{sig.name}: exited {process.returncode} after {took:.2f} s")

            assert process.returncode == 130, stderr
            assert "Traceback" not in stderr
            assert not skopeo.manifest_exists(target)
            posts = [e for e in proxy.log if e.method == "POST" and e.status == 202]
            sessions = {_uuid(e.path) for e in proxy.log if e.method != "POST"} - {""}
            committed = {_uuid(e.path) for e in proxy.log if e.method == "PUT" and e.status == 201}
            deleted = {_uuid(e.path) for e in proxy.log if e.method == "DELETE"}
            assert len(sessions) == len(posts), "a session was opened and never touched again"
            assert sessions - committed <= deleted, "a session was not deleted"
            broken = {
                _uuid(e.path)
                for e in proxy.log
                if e.method in ("PATCH", "PUT") and e.status is None and e.request_body_bytes
            }
            # A live session has its ``startedat``; a deleted one may leave an empty hash
            # state directory behind (Distribution 2.8 writes it while closing), never that.
            uploads = backend.storage / "docker/registry/v2/repositories/cancel"
            live = (uploads / f"app{number}" / "_uploads").glob("*/startedat")
            left = {p.parent.name for p in live}
            assert left <= broken, (
                f"sessions left open that did not break mid-body: {left - broken}"
            )


def _pushing(hoist: list[str], target: str, *options: str) -> subprocess.Popen[str]:
    """``hoist push`` started, once a layer's body is on its way (plain progress said so)."""
    process = subprocess.Popen(
        [*hoist, "push", *options, "--progress", "plain", target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.rstrip().endswith(": Pushing"):
            break
    return process


def _uuid(path: str) -> str:
    """The session's UUID in an upload URL (or the new one a POST answered with)."""
    return path.partition("/blobs/uploads/")[2].partition("?")[0]


@pytest.mark.parametrize("source", ["store", "layout"])
def test_a_registry_that_vanishes_mid_push_is_one_error_line(
    backend: LocalRegistry, tmp_path: Path, source: str
) -> None:
    """The registry dies while layers stream and compress (from the store) or stream as their
    files hold them (from a layout): exit 1, one ``Error:`` line, nothing else on stderr (no
    never-retrieved task, no generator closed while it runs)."""
    target = f"{backend.host}/vanish/app:v1"
    big = [LayerSpec(32 * MiB, 81 + n) for n in range(4)]
    hoist = [sys.executable, str(ROOT / "cli.py"), "--root", str(tmp_path / "root")]
    options = ["--max-upload-attempts", "2"]
    if source == "layout":
        write_oci_layout(tmp_path / "layout", big, "v1")
        options += ["--from", str(tmp_path / "layout")]
    else:
        archive = tmp_path / "image.tar"
        write_docker_archive(archive, big, [target], tmp_path / "work")
        subprocess.run([*hoist, "load", "-i", str(archive)], check=True, capture_output=True)
    process = _pushing(hoist, target, *options)
    time.sleep(0.2)  # bodies in flight; not an assertion
    backend.stop()
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr


async def test_a_layout_blob_cut_short_under_the_push_is_one_error_and_nothing_is_pushed(
    backend: LocalRegistry, tmp_path: Path
) -> None:
    """The layout was read whole (sizes checked), then a blob's file shrinks before it goes:
    the body read from the file ends early, and the push fails on the file, not on the
    request it broke (which would be retried), with no manifest put."""
    layout, target = tmp_path / "layout", f"{backend.host}/cut/app:v1"
    image = await anyio.to_thread.run_sync(lambda: write_oci_layout(layout, LAYERS, "v1"))
    blob = layout / "blobs" / "sha256" / image.layer_digests[0].hex
    cut: list[Path] = []

    def on_event(event: object) -> None:
        if isinstance(event, LayerProgress) and event.layer == image.diff_ids[0] and not cut:
            with blob.open("r+b") as file:  # before the layer's first request
                file.truncate(MiB)
            cut.append(blob)

    async with Engine(tmp_path / "root", config_dir=tmp_path / "config", retry=FAST) as engine:
        with pytest.raises(ImageSourceError, match="bytes early"):
            await engine.push(target, source=layout, progress=on_event)

    assert cut and manifest(backend, "cut/app", "v1") is None


@pytest.fixture
def sign_in_page(backend: LocalRegistry) -> Iterator[Proxy]:
    """A proxy that answers every ``HEAD`` itself, 200 with a web page."""
    page = Fault("status", 200, html=True)
    plan = FaultPlan(schedule=dict.fromkeys(range(100), page), methods={"HEAD"}, max_faults=100)
    with running_proxy(backend.host, faults=plan) as running:
        yield running
        assert running.errors == []


async def test_a_web_page_answering_a_head_is_not_the_blob(
    backend: LocalRegistry, sign_in_page: Proxy, tmp_path: Path
) -> None:
    """Every blob ``HEAD`` gets a sign-in page with 200: no layer and no config is taken as
    present on its word, so the manifest names only blobs the repository got."""
    direct = f"{backend.host}/direct/app:v1"
    target = f"{sign_in_page.host}/behind-a-page/app:v1"
    archive = tmp_path / "image.tar"
    await anyio.to_thread.run_sync(
        lambda: write_docker_archive(archive, LAYERS, [direct], tmp_path / "work")
    )
    async with Engine(tmp_path / "root", config_dir=tmp_path / "config") as engine:
        await engine.load(archive)
        await engine.push(direct)  # the store now knows each layer's compressed digest
        await engine.tag(direct, target)
        result = await engine.push(target)

    heads = [e for e in sign_in_page.log if e.method == "HEAD"]
    assert heads and all(e.status == 200 for e in heads)
    assert {layer.outcome for layer in result.layers} == {LayerOutcome.PUSHED}
    assert_pushed_whole(backend, "behind-a-page/app", "v1", str(result.digest))


@pytest.fixture
def refusing(backend: LocalRegistry, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    """A proxy that answers the first manifest PUTs itself, 400 with a registry error code:
    ``request.param`` is (code, how many)."""
    code, times = request.param
    refusal = Fault("status", 400, code=code)
    schedule = dict.fromkeys(range(times), refusal)
    plan = FaultPlan(schedule=schedule, methods={"PUT"}, path="/manifests/", max_faults=times)
    with running_proxy(backend.host, faults=plan) as running:
        yield running
        assert running.errors == []


@pytest.mark.parametrize(
    "refusing", [("MANIFEST_BLOB_UNKNOWN", 1), ("DIGEST_INVALID", 1)], indirect=True
)
async def test_a_manifest_refused_for_a_blob_has_its_blobs_checked_and_goes_again(
    backend: LocalRegistry, refusing: Proxy, tmp_path: Path
) -> None:
    """As when another process commits a shared layer at that moment: HEAD every blob, place
    what is missing, PUT once more; the push succeeds."""
    result, _ = await _engine_push(tmp_path, f"{refusing.host}/refused-once/app:v1")

    log = list(refusing.log)
    puts = [e for e in log if e.method == "PUT" and "/manifests/" in e.path]
    assert [e.status for e in puts] == [400, 201]
    after_refusal = log[log.index(puts[0]) + 1 : log.index(puts[1])]
    checked = {e.path.rpartition("/blobs/")[2] for e in after_refusal if e.method == "HEAD"}
    assert checked >= {str(layer.digest) for layer in result.layers}, "a layer was not checked"
    # Every blob was there after all: nothing is sent again.
    assert [e.method for e in after_refusal if e.method != "HEAD"] == []
    assert_pushed_whole(backend, "refused-once/app", "v1", str(result.digest))


@pytest.mark.parametrize(
    ("refusing", "puts", "message"),
    [
        (("MANIFEST_BLOB_UNKNOWN", 2), 2, "manifest refused: manifest blob unknown: injected"),
        (("MANIFEST_INVALID", 2), 1, "manifest refused: manifest invalid: injected"),
    ],
    indirect=["refusing"],
)
async def test_a_manifest_refused_for_good_says_so(
    refusing: Proxy, tmp_path: Path, puts: int, message: str
) -> None:
    with pytest.raises(RegistryResponseError) as refused:
        await _engine_push(tmp_path, f"{refusing.host}/refused/app:v1")

    sent = [e for e in refusing.log if e.method == "PUT" and "/manifests/" in e.path]
    assert str(refused.value).startswith(message)
    assert len(sent) == puts
