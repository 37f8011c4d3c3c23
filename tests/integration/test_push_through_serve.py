"""``hoist push`` as a client of a running ``hoist serve``, found as the docker CLI finds dockerd.

The server is a real ``hoist serve`` on its store's default socket; the client a real ``hoist``
process, run through a probe that reports which heavy modules it imported: a push through the
daemon imports neither aiohttp nor asyncio nor the engine's push machinery. What it pushed is
read back with skopeo.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.serve.address import default_socket
from tests.support.clients import ROOT, Skopeo
from tests.support.hoist_serve import ping
from tests.support.proxy import running_proxy
from tests.support.registry import LocalRegistry, SecuredRegistry
from tests.support.sample import LayerSpec, write_docker_archive, write_oci_layout

pytestmark = pytest.mark.integration

LAYERS = [LayerSpec(96 * 1024, 1501), LayerSpec(32 * 1024, 1502)]
HEAVY = ("aiohttp", "asyncio", "engine.api")

#: Runs ``cli.main`` and reports, last on stderr, which of ``HEAVY`` it imported.
_PROBE = (
    "import sys, cli\n"
    "code = cli.main(sys.argv[1:])\n"
    f"loaded = [name for name in {HEAVY!r} if name in sys.modules]\n"
    "print('imported: ' + ','.join(loaded), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@dataclass
class Client:
    """``hoist --root ROOT …`` with a config.json directory of its own."""

    root: Path
    config: Path

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> Run:
        answer = subprocess.run(
            [sys.executable, "-c", _PROBE, "--root", str(self.root), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if k != "HOIST_HOST"},
                "PYTHONPATH": str(ROOT),
                "DOCKER_CONFIG": str(self.config),
                **(env or {}),
            },
        )
        *errors, imported = answer.stderr.splitlines() or [""]
        return Run(answer.returncode, answer.stdout, "\n".join(errors), imported)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    #: The probe's report: "imported: " and the heavy modules loaded.
    imported: str

    @property
    def in_process(self) -> bool:
        assert self.imported.startswith("imported: "), self.stderr
        return "aiohttp" in self.imported


@pytest.fixture
def root() -> Iterator[Path]:
    # Short: the default socket's path must fit a unix socket address (107 bytes).
    with tempfile.TemporaryDirectory(prefix="hoist-root-", dir="/tmp") as short:
        yield Path(short)


@pytest.fixture
def client(root: Path, tmp_path: Path, registry: LocalRegistry) -> Client:
    hoist = Client(root, tmp_path / "client-config")
    archive = tmp_path / "app.tar"
    write_docker_archive(archive, LAYERS, ["app:v1"], tmp_path / "work")
    assert hoist("load", "-q", "-i", str(archive)).code == 0
    return hoist


@pytest.fixture
def serve(root: Path, client: Client, tmp_path: Path) -> Iterator[Path]:
    """``hoist --root ROOT serve``: no address, so it listens on ROOT's default socket."""
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "--root", str(root), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "server-config")},
    )
    sock = default_socket(root)
    try:
        for _ in range(300):
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            if sock.exists() and ping(sock):
                break
            subprocess.run(["sleep", "0.1"], check=True)
        yield sock
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _digest(output: str) -> str:
    found = re.search(r"v1: digest: (sha256:[0-9a-f]{64}) size: \d+", output)
    assert found is not None, output
    return found.group(1)


def test_push_goes_through_the_daemon_on_the_default_socket(
    client: Client, serve: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    target = f"{registry.host}/through/app:v1"
    assert client("tag", "app:v1", target).code == 0

    first = client("push", target)
    assert first.code == 0, first.stderr
    assert not first.in_process, first.imported
    assert first.imported == "imported: "
    assert f"The push refers to repository [{registry.host}/through/app]" in first.stdout
    assert first.stdout.count(": Pushed") == len(LAYERS)
    assert skopeo.digest(target) == _digest(first.stdout)

    again = client("push", target)
    assert again.code == 0, again.stderr
    assert again.stdout.count(": Layer already exists") == len(LAYERS)
    assert _digest(again.stdout) == _digest(first.stdout)

    quiet = client("push", "-q", target)
    assert quiet.stdout == f"{target}@{_digest(first.stdout)}\n"


def test_through_the_daemon_and_in_process_print_the_same(
    client: Client, serve: Path, registry: LocalRegistry
) -> None:
    target = f"{registry.host}/same/app"
    assert client("tag", "app:v1", target).code == 0  # :latest
    assert client("push", target).code == 0
    for progress in ("plain", "json"):
        through = client("push", "--progress", progress, target)
        here = client("push", "--progress", progress, "--max-concurrent-uploads", "3", target)
        assert (through.in_process, here.in_process) == (False, True)
        assert through.stdout.splitlines()[0] == "Using default tag: latest" or progress == "json"
        assert sorted(through.stdout.splitlines()) == sorted(here.stdout.splitlines())


def test_a_batch_goes_through_the_daemon_as_one_push(
    client: Client, serve: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    """Several images: one request, the shared layers sent once and mounted elsewhere, the
    quiet lines as they complete, and the same summary table as a batch pushed here."""
    targets = [f"{registry.host}/batch/app{i}:v1" for i in range(3)]
    for target in targets:
        assert client("tag", "app:v1", target).code == 0

    with running_proxy(registry.host) as wire:
        # The same image in repositories of their own, through a proxy that counts requests.
        counted = [f"{wire.host}/counted/app{i}:v1" for i in range(3)]
        for target in counted:
            assert client("tag", "app:v1", target).code == 0
        assert client("push", "-q", *counted).code == 0
    # One client of the registry for the batch: one /v2/ check, not one per image.
    assert [e.path for e in wire.exchanges("GET")].count("/v2/") == 1

    quiet = client("push", "-q", *targets)
    assert quiet.code == 0, quiet.stderr
    assert quiet.imported == "imported: ", "neither aiohttp, asyncio nor the engine's push"
    digest = skopeo.digest(targets[0])
    assert sorted(quiet.stdout.splitlines()) == [f"{target}@{digest}" for target in targets]
    assert {skopeo.digest(target) for target in targets} == {digest}
    again = _summary_rows(client("push", "--progress", "plain", *targets))
    assert [row[0] for row in again] == targets
    # Nothing sent again: each layer found in its repository, or mounted there.
    assert [(row[2], sum(map(int, row[3:5])), row[5]) for row in again] == [
        ("0", len(LAYERS), "0B")
    ] * len(targets)

    fresh = [f"{registry.host}/batch/fresh{i}:v1" for i in range(3)]
    for target in fresh:
        assert client("tag", "app:v1", target).code == 0
    cold = client("push", "--progress", "plain", *fresh)
    assert cold.code == 0, cold.stderr
    rows = _summary_rows(cold)
    assert [row[0] for row in rows] == fresh
    assert {row[1] for row in rows} == {digest[:19]}
    # From the earlier batch's repositories, every layer is mounted: nothing crosses again.
    assert [row[2:] for row in rows] == [("0", str(len(LAYERS)), "0", "0B")] * len(fresh)

    through = client("push", "--progress", "plain", *fresh)
    here = client("push", "--progress", "plain", "--max-concurrent-uploads", "3", *fresh)
    assert (through.in_process, here.in_process) == (False, True)
    assert (through.code, here.code) == (0, 0)
    # The layers' lines interleave as the pushes happen to run; the results do not.
    assert _summary_rows(through) == _summary_rows(here)
    for run in (through, here):
        assert run.stdout.count(f"v1: digest: {digest} size: ") == len(fresh)


def _summary_rows(run: Run) -> list[tuple[str, ...]]:
    """The rows of the table a batch's output ends with, under its IMAGE … SENT header."""
    lines = run.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("IMAGE "))
    return [tuple(re.split(r" {3,}", line)) for line in lines[header + 1 :]]


def test_an_image_a_batch_cannot_push_is_its_own_error_through_the_daemon(
    client: Client, serve: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    good = f"{registry.host}/partial/app:v1"
    missing = f"{registry.host}/partial/missing:v1"
    assert client("tag", "app:v1", good).code == 0

    pushed = client("push", "--progress", "plain", good, missing)
    assert pushed.code == 1
    assert not pushed.in_process
    assert pushed.stderr == f"Error: {missing}: No such image: {missing}"
    assert skopeo.digest(good) == _digest(pushed.stdout)
    assert [row[:2] for row in _summary_rows(pushed)] == [
        (good, _digest(pushed.stdout)[:19]),
        (missing, "failed"),
    ]

    both = client("push", "-a", good, missing)
    assert both.code == 1
    assert both.stderr == "Error: --all-tags takes one repository name"


def test_the_daemons_refusal_is_one_error_line(client: Client, serve: Path) -> None:
    missing = client("push", "127.0.0.1:1/none/app:v1")
    assert missing.code == 1
    assert not missing.in_process
    assert (
        missing.stderr
        == "Error: An image does not exist locally with the tag: 127.0.0.1:1/none/app"
    )


def test_from_a_layout_through_the_daemon(
    client: Client, serve: Path, registry: LocalRegistry, tmp_path: Path, skopeo: Skopeo
) -> None:
    """``--from`` goes too: the daemon reads the layout itself (the path made absolute here)."""
    layout = write_oci_layout(tmp_path / "layout", LAYERS, "v1")
    target = f"{registry.host}/layout/app:v1"
    relative = os.path.relpath(tmp_path / "layout", ROOT)  # the client runs in ROOT
    pushed = client("push", "--from", relative, target)
    assert pushed.code == 0, pushed.stderr
    assert not pushed.in_process
    assert skopeo.digest(target) == str(layout.manifest_digest)
    assert _digest(pushed.stdout) == str(layout.manifest_digest)


def test_a_push_the_daemon_cannot_make_runs_here_unless_a_daemon_is_named(
    client: Client, serve: Path, registry: LocalRegistry
) -> None:
    target = f"{registry.host}/platform/app:v1"
    assert client("tag", "app:v1", target).code == 0
    here = client("push", "-q", "--max-upload-attempts", "2", target)
    assert here.code == 0, here.stderr
    assert here.in_process

    named = client(
        "push", "--max-upload-attempts", "2", target, env={"HOIST_HOST": f"unix://{serve}"}
    )
    assert named.code == 1
    assert named.stderr.startswith(
        "Error: --max-upload-attempts cannot go through the hoist serve at unix://"
    )


def test_a_socket_nobody_listens_on(client: Client, root: Path, registry: LocalRegistry) -> None:
    """Left by a daemon that was killed: the push runs here; named (-H), it is an error."""
    target = f"{registry.host}/stale/app:v1"
    assert client("tag", "app:v1", target).code == 0
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(str(default_socket(root)))
    here = client("push", "-q", target)
    assert here.code == 0, here.stderr
    assert here.in_process

    named = client("-H", f"unix://{default_socket(root)}", "push", target)
    assert named.code == 1
    assert named.stderr.startswith(f"Error: Cannot connect to the hoist serve at unix://{root}")
    assert "Is it running?" in named.stderr


def test_the_clients_credentials_travel_to_the_daemon(
    client: Client, serve: Path, basic_auth_registry: SecuredRegistry, skopeo: Skopeo
) -> None:
    secured = basic_auth_registry
    target = f"{secured.host}/private/app:v1"
    assert client("tag", "app:v1", target).code == 0
    anonymous = client("push", target)
    assert anonymous.code == 1
    assert not anonymous.in_process
    assert "unauthorized" in anonymous.stderr.lower()

    login = client(
        "login", "-u", secured.username, "--password-stdin", secured.host, input=secured.password
    )
    assert login.code == 0, login.stderr

    pushed = client("push", target)
    assert pushed.code == 0, pushed.stderr
    assert not pushed.in_process
    answer = skopeo.run(
        "inspect", "--tls-verify=false", f"--creds={secured.creds}", f"docker://{target}"
    )
    assert answer.returncode == 0, answer.stderr
    assert secured.password not in pushed.stdout + pushed.stderr

    # A batch sends them too, for its registry (X-Registry-Config).
    second = f"{secured.host}/private/other:v1"
    assert client("tag", "app:v1", second).code == 0
    batch = client("push", target, second)
    assert batch.code == 0, batch.stderr
    assert not batch.in_process
    assert secured.password not in batch.stdout + batch.stderr
    answer = skopeo.run(
        "inspect", "--tls-verify=false", f"--creds={secured.creds}", f"docker://{second}"
    )
    assert answer.returncode == 0, answer.stderr


def test_zstd_through_the_daemon(
    client: Client, serve: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    target = f"{registry.host}/zstd/app:v1"
    assert client("tag", "app:v1", target).code == 0
    pushed = client("push", "--compression", "zstd", "--compression-level", "5", target)
    assert pushed.code == 0, pushed.stderr
    assert not pushed.in_process
    manifest = json.loads(skopeo.raw_manifest(target))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }

    refused = client("push", "--compression-level", "9", target)
    assert refused.code == 1
    assert refused.stderr == "Error: gzip compression level must be 0 to 3, not 9"
