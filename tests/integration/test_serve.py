"""``hoist serve`` driven by the real docker CLI (``DOCKER_HOST=unix://…``), as a user drives it.

The server runs as a child process on a store of its own; what ``docker push`` sent through it
is read back with skopeo. The docker CLI reads no user config (``DOCKER_CONFIG`` is a temp dir).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.clients import ROOT, Skopeo
from tests.support.proxy import FaultPlan, Proxy, running_proxy
from tests.support.registry import LocalRegistry, SecuredRegistry
from tests.support.sample import LayerSpec, write_docker_archive
from tests.support.tls import CertificateAuthority

pytestmark = pytest.mark.integration

KiB = 1024
LAYERS = [LayerSpec(160 * KiB, 1401), LayerSpec(48 * KiB, 1402)]
#: Several seconds' worth through a throttled proxy.
BIG = [LayerSpec(3 * 1024 * KiB, 1411), LayerSpec(2 * 1024 * KiB, 1412)]


@dataclass
class Daemon:
    """A running ``hoist serve`` and a docker CLI pointed at it."""

    process: subprocess.Popen[str]
    socket: Path
    docker_config: Path
    log: str | None = None

    def env(self) -> dict[str, str]:
        """A docker client's environment: this server, a config of the test's own."""
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.docker_config),
        }

    def docker(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=self.env(),
            input=input,
        )

    def stop(self) -> str:
        """SIGTERM, as a service manager stops it: exit 0, the socket gone; its log (stderr)."""
        if self.log is None:
            self.process.send_signal(signal.SIGTERM)
            _, self.log = self.process.communicate(timeout=30)
            assert self.process.returncode == 0, self.log
            assert not self.socket.exists()
        return self.log

    def ok(self, *args: str, input: str | None = None) -> str:
        answer = self.docker(*args, input=input)
        assert answer.returncode == 0, f"docker {args}: {answer.stderr}"
        return answer.stdout


def _wait_for_ping(daemon: Daemon) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert daemon.process.poll() is None, daemon.process.communicate()[1]
        if daemon.socket.exists() and _ping(daemon.socket).endswith(b"\r\n\r\nOK"):
            return
        time.sleep(0.1)
    raise AssertionError("hoist serve did not answer /_ping within 30 s")


def _ping(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(str(path))
        except OSError:
            return b""
        client.sendall(b"GET /_ping HTTP/1.0\r\nHost: hoist\r\n\r\n")
        answer = b""
        while chunk := client.recv(4096):
            answer += chunk
        return answer


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is missing (CI has it): these tests drive hoist serve with it")
    path = tmp_path / "hoist.sock"
    command = [sys.executable, str(ROOT / "cli.py"), "--root", str(tmp_path / "root")]
    process = subprocess.Popen(
        [*command, "--log-level", "debug", "serve", "--host", f"unix://{path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "server-config")},
    )
    running = Daemon(process, path, tmp_path / "docker-config")
    try:
        _wait_for_ping(running)
        yield running
    finally:
        if process.poll() is None and running.log is None:
            running.stop()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "sample.tar"
    write_docker_archive(path, LAYERS, ["app:v1"], tmp_path / "work")
    return path


def test_socket_is_group_only(daemon: Daemon) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660


def test_version_and_info_show_the_server(daemon: Daemon) -> None:
    assert daemon.ok("info", "--format", "{{.ServerVersion}} {{.Images}}").split()[1] == "0"
    out = daemon.ok("version")
    assert "Server: Hoist" in out
    assert re.search(r"API version:\s+1\.48 \(minimum version 1\.24\)", out)


def test_load_tag_images_inspect_push_rmi(
    daemon: Daemon, archive: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    assert daemon.ok("load", "-i", str(archive)).strip() == "Loaded image: app:v1"
    target = f"{registry.host}/serve/app:v1"
    daemon.ok("tag", "app:v1", target)

    listed = daemon.ok("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").splitlines()
    assert {line.split()[0] for line in listed} == {"app:v1", target}
    assert len({line.split()[1] for line in listed}) == 1
    only = daemon.ok("images", "--format", "{{.Repository}}:{{.Tag}}", "app")
    assert only.split() == ["app:v1"]

    [inspected] = json.loads(daemon.ok("image", "inspect", "app:v1"))
    assert sorted(inspected["RepoTags"]) == sorted(["app:v1", target])
    assert inspected["Os"] == "linux" and inspected["Architecture"] == "amd64"
    assert len(inspected["RootFS"]["Layers"]) == len(LAYERS)
    assert inspected["Id"].startswith("sha256:")
    assert json.loads(daemon.ok("inspect", "app:v1"))[0]["Id"] == inspected["Id"]

    pushed = daemon.ok("push", target)
    assert f"The push refers to repository [{registry.host}/serve/app]" in pushed
    assert pushed.count(": Pushed") == len(LAYERS)
    digest = re.search(r"^v1: digest: (sha256:[0-9a-f]{64}) size: \d+$", pushed, re.MULTILINE)
    assert digest is not None, pushed
    assert skopeo.digest(target) == digest.group(1)

    again = daemon.ok("push", target)
    assert again.count("Layer already exists") == len(LAYERS)

    removed = daemon.ok("rmi", target, "app:v1").splitlines()
    assert removed[:2] == [f"Untagged: {target}", "Untagged: app:v1"]
    assert removed[2] == f"Deleted: {inspected['Id']}"
    assert daemon.ok("images", "-q") == ""


def test_unknown_images_get_dockers_errors(daemon: Daemon, registry: LocalRegistry) -> None:
    push = daemon.docker("push", f"{registry.host}/serve/nothing:v1")
    assert push.returncode == 1
    assert (
        push.stderr.strip()
        == (
            "Error response from daemon: An image does not exist locally with the tag: "
            f"{registry.host}/serve/nothing"
        )
        or "An image does not exist locally" in push.stderr
    )
    inspect = daemon.docker("image", "inspect", "nothing:v1")
    assert inspect.returncode == 1
    assert "No such image: nothing:v1" in inspect.stderr
    rmi = daemon.docker("rmi", "nothing:v1")
    assert rmi.returncode == 1
    assert "No such image: nothing:v1" in rmi.stderr


def test_login_then_push_with_the_clients_credentials(
    daemon: Daemon, archive: Path, basic_auth_registry: SecuredRegistry, skopeo: Skopeo
) -> None:
    secured = basic_auth_registry
    target = f"{secured.host}/serve/private:v1"
    daemon.ok("load", "-i", str(archive))
    daemon.ok("tag", "app:v1", target)

    anonymous = daemon.docker("push", target)
    assert anonymous.returncode == 1
    assert "unauthorized" in anonymous.stderr.lower()

    refused = daemon.docker(
        "login", "-u", secured.username, "--password-stdin", secured.host, input="wrong"
    )
    assert refused.returncode == 1
    assert "unauthorized" in refused.stderr.lower()

    login = daemon.docker(
        "login", "-u", secured.username, "--password-stdin", secured.host, input=secured.password
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "Login Succeeded"
    # The client keeps the credentials, and sends them with each push: the daemon keeps none.
    assert secured.host in (daemon.docker_config / "config.json").read_text()

    pushed = daemon.ok("push", target)
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert digest is not None, pushed
    answer = skopeo.run(
        "inspect", "--tls-verify=false", f"--creds={secured.creds}", f"docker://{target}"
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["Digest"] == digest.group(1)
    for output in (daemon.stop(), pushed, login.stdout, login.stderr, refused.stderr):
        assert secured.password not in output


def _http(
    path: Path,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.0 request over the socket: status, headers (lower-case names), body."""
    head = [f"{method} {target} HTTP/1.0", "Host: hoist", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        client.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    raw_head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}, body


def test_ping_at_any_version_and_unversioned(daemon: Daemon) -> None:
    for target in ("/_ping", "/v1.48/_ping", "/v1.24/_ping"):
        status, headers, body = _http(daemon.socket, "GET", target)
        assert (status, body) == (200, b"OK")
        assert headers["api-version"] == "1.48"
        assert headers["docker-experimental"] == "false"
        assert headers["ostype"] == "linux"
    status, headers, body = _http(daemon.socket, "HEAD", "/_ping")
    assert (status, body) == (200, b"")
    assert headers["api-version"] == "1.48"


@pytest.mark.parametrize(
    ("method", "target", "status", "message"),
    [
        ("GET", "/v1.48/containers/json", 404, "page not found"),
        ("GET", "/nothing", 404, "page not found"),
        ("PUT", "/v1.48/images/load", 501, "PUT /v1.48/images/load is not implemented"),
        ("GET", "/v1.99/version", 400, "client version 1.99 is too new"),
        ("GET", "/v1.12/version", 400, "client version 1.12 is too old"),
        ("GET", "/images/nothing:v1/json", 404, "No such image: nothing:v1"),
        ("DELETE", "/v1.48/images/nothing:v1", 404, "No such image: nothing:v1"),
        ("POST", "/images/app:v1/tag", 400, "repository name (repo) is required"),
        ("POST", "/images/app@sha256:" + "a" * 64 + "/push", 400, "cannot push a digest"),
        ("POST", "/images/app/push?tag=sha256:" + "a" * 64, 400, "cannot push a digest"),
    ],
)
def test_what_is_not_served_gets_a_docker_error(
    daemon: Daemon, method: str, target: str, status: int, message: str
) -> None:
    got, headers, body = _http(daemon.socket, method, target)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["message"].startswith(message)


def test_a_malformed_registry_auth_is_refused_without_quoting_it(
    daemon: Daemon, archive: Path
) -> None:
    daemon.ok("load", "-i", str(archive))
    header = "c2VjcmV0LXBhc3N3b3Jk!!"
    status, _, body = _http(
        daemon.socket, "POST", "/v1.48/images/app/push?tag=v1", {"X-Registry-Auth": header}
    )
    assert status == 400
    message = json.loads(body)["message"]
    assert message.startswith("invalid X-Registry-Auth header")
    assert header not in message and header not in daemon.stop()


def test_a_batch_the_daemon_cannot_read_is_refused_without_quoting_it(daemon: Daemon) -> None:
    for body, message in [
        (b"[not json", "invalid JSON body"),
        (b'{"Refs": []}', "Refs names no image to push"),
        (b'{"Refs": "app:v1"}', 'the body must be a JSON object {"Refs": [image, …]}'),
    ]:
        status, _, answer = _http(daemon.socket, "POST", "/v1.48/hoist/push", body=body)
        assert (status, json.loads(answer)["message"]) == (400, message)
    header = "c2VjcmV0LXBhc3N3b3Jk!!"
    status, _, answer = _http(
        daemon.socket,
        "POST",
        "/hoist/push",
        {"X-Registry-Config": header},
        body=b'{"Refs": ["app:v1"]}',
    )
    assert status == 400
    assert json.loads(answer)["message"].startswith("invalid X-Registry-Config header")
    assert header not in answer.decode() and header not in daemon.stop()


@contextmanager
def _slow_push(
    daemon: Daemon,
    tmp_path: Path,
    registry: LocalRegistry,
    name: str,
    rate: int,
    images: int = 1,
) -> Iterator[tuple[Proxy, str, subprocess.Popen[str]]]:
    """A big image's push under way through a proxy throttled to ``rate`` bytes/s: the proxy
    (its log shows the sessions), the target, and the client, past "Preparing". The client is
    ``docker push``; for several ``images`` (the target and more repositories of ``name``), a
    batch: ``hoist push`` through the daemon."""
    write_docker_archive(tmp_path / "big.tar", BIG, ["big:v1"], tmp_path / "big-work")
    daemon.ok("load", "-i", str(tmp_path / "big.tar"))
    plan = FaultPlan(rates={"throttle": 1.0}, throttle_rate=rate, max_faults=100)
    with running_proxy(registry.host, faults=plan) as proxy:
        target = f"{proxy.host}/serve/{name}:v1"
        targets = [target] + [f"{proxy.host}/serve/{name}{n}:v1" for n in range(1, images)]
        for each in targets:
            daemon.ok("tag", "big:v1", each)
        hoist = [sys.executable, str(ROOT / "cli.py"), "-H", f"unix://{daemon.socket}"]
        process = subprocess.Popen(
            ["docker", "push", target] if images == 1 else [*hoist, "push", *targets],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=daemon.env(),
        )
        assert process.stdout is not None
        for line in process.stdout:
            if "Preparing" in line:
                break
        time.sleep(0.5)  # some bytes in flight; not an assertion
        yield proxy, target, process


def _sessions_all_deleted(proxy: Proxy) -> bool:
    posted = {e.path for e in proxy.log if e.method == "POST" and e.status == 202}
    deleted = [e for e in proxy.log if e.method == "DELETE"]
    return bool(posted) and len(deleted) >= len(posted)


@pytest.mark.parametrize("images", [1, 3], ids=["docker-push", "hoist-batch"])
def test_a_client_that_disconnects_cancels_its_push(
    images: int, daemon: Daemon, tmp_path: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    slow = _slow_push(daemon, tmp_path, registry, "gone", 256 * KiB, images=images)
    with slow as (proxy, target, process):
        process.kill()
        process.communicate(timeout=30)
        deadline = time.monotonic() + 20
        while not _sessions_all_deleted(proxy) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _sessions_all_deleted(proxy), [(e.method, e.path, e.status) for e in proxy.log]
        assert not proxy.exchanges("PUT", "/manifests/")
        assert not skopeo.manifest_exists(target)
    assert daemon.ok("version", "--format", "{{.Server.APIVersion}}").strip() == "1.48"


def test_sigterm_stops_a_running_push_within_seconds(
    daemon: Daemon, tmp_path: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    with _slow_push(daemon, tmp_path, registry, "stopped", 128 * KiB) as (proxy, target, process):
        # Bounded without a timing assertion: stop() gives the server 30 s to exit 0 and remove
        # its socket, and at this rate the push alone would take far longer.
        log = daemon.stop()
        process.communicate(timeout=30)
        assert "Traceback" not in log
        assert process.returncode != 0
        assert not skopeo.manifest_exists(target)
        assert _sessions_all_deleted(proxy)


def _serve_once(tmp_path: Path, host: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "cli.py"), "--root", str(tmp_path / "root")]
    return subprocess.run(
        [*command, "serve", "--host", host], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_network_address_is_refused_in_one_line(tmp_path: Path) -> None:
    refused = _serve_once(tmp_path, "tcp://0.0.0.0:2375")
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith("Error: refusing to listen on 0.0.0.0 without --tlsverify")


def test_a_served_socket_is_not_taken_over(daemon: Daemon, tmp_path: Path) -> None:
    second = _serve_once(tmp_path / "second", f"unix://{daemon.socket}")
    assert second.returncode == 1
    assert (
        second.stderr.strip() == f"Error: {daemon.socket} is in use: another server listens there"
    )
    assert daemon.ok("version", "--format", "{{.Server.APIVersion}}").strip() == "1.48"


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is missing (CI has it): these tests drive hoist serve with it")
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left:
        left.bind(str(stale))  # bound, never listening: what a killed server leaves
    command = [sys.executable, str(ROOT / "cli.py"), "--root", str(tmp_path / "root")]
    process = subprocess.Popen(
        [*command, "serve", "--host", f"unix://{stale}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon = Daemon(process, stale, tmp_path / "docker-config")
    try:
        _wait_for_ping(daemon)
    finally:
        daemon.stop()


def test_push_all_tags_in_one_stream(
    daemon: Daemon, archive: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    daemon.ok("load", "-i", str(archive))
    repository = f"{registry.host}/serve/every"
    for tag in ("v1", "v2"):
        daemon.ok("tag", "app:v1", f"{repository}:{tag}")
    pushed = daemon.ok("push", "--all-tags", repository)
    digests = re.findall(r"^(v\d): digest: (sha256:[0-9a-f]{64})", pushed, re.MULTILINE)
    assert [tag for tag, _ in digests] == ["v1", "v2"]
    for tag, digest in digests:
        assert skopeo.digest(f"{repository}:{tag}") == digest
    missing = daemon.docker("push", "--all-tags", f"{registry.host}/serve/none")
    assert missing.returncode == 1
    assert "An image does not exist locally with the tag: " in missing.stderr


def test_two_clients_pushing_images_that_share_layers_send_each_layer_once(
    daemon: Daemon, archive: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    daemon.ok("load", "-i", str(archive))
    targets = [f"{registry.host}/serve/{name}:v1" for name in ("one", "two")]
    for target in targets:
        daemon.ok("tag", "app:v1", target)
    clients = [
        subprocess.Popen(["docker", "push", t], stdout=subprocess.PIPE, text=True, env=daemon.env())
        for t in targets
    ]
    outputs = [client.communicate(timeout=300)[0] for client in clients]

    assert [client.returncode for client in clients] == [0, 0], outputs
    # One upload per layer for both: the other client's push mounts what the first one sent.
    together = "\n".join(outputs)
    assert together.count(": Pushed") == len(LAYERS), together
    assert len(re.findall(r": Mounted from serve/(one|two)$", together, re.MULTILINE)) == len(
        LAYERS
    ), together
    digests = {skopeo.digest(target) for target in targets}
    assert len(digests) == 1, "the same manifest in both repositories"


def test_docker_py_loads_tags_and_pushes_through_hoist_serve(
    daemon: Daemon, archive: Path, registry: LocalRegistry, skopeo: Skopeo
) -> None:
    import docker  # the Docker SDK for Python (docker-py), as programs use it

    client = docker.DockerClient(base_url=f"unix://{daemon.socket}", version="auto")
    try:
        assert client.version()["ApiVersion"] == "1.48"
        [image] = client.images.load(archive.read_bytes())
        target = f"{registry.host}/serve/py"
        assert image.tag(target, tag="v1")
        messages = list(client.images.push(target, tag="v1", stream=True, decode=True))
        assert not [m for m in messages if "error" in m or "errorDetail" in m], messages
        [aux] = [m["aux"] for m in messages if "aux" in m]
        assert aux["Tag"] == "v1" and aux["Digest"] == skopeo.digest(f"{target}:v1")
        assert {m["status"] for m in messages if "id" in m} >= {"Preparing", "Pushed"}
        assert f"{target}:v1" in client.images.get(f"{target}:v1").tags
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_tlsverify_serves_only_clients_with_a_certificate_of_its_ca(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is missing (CI has it): this test drives hoist serve with it")
    ca = CertificateAuthority(tmp_path / "ca")
    server, client = ca.issue_server(), ca.issue_client()
    certs = tmp_path / "client-certs"  # what DOCKER_CERT_PATH holds, under docker's names
    certs.mkdir()
    for name, source in (("ca.pem", ca.certificate), ("cert.pem", client.certificate),
                         ("key.pem", client.key)):  # fmt: skip
        (certs / name).write_bytes(source.read_bytes())
    port = _free_port()
    command = [sys.executable, str(ROOT / "cli.py"), "--root", str(tmp_path / "root"), "serve"]
    tls = ["--tlsverify", "--tlscacert", str(ca.certificate)]
    tls += ["--tlscert", str(server.certificate), "--tlskey", str(server.key)]
    process = subprocess.Popen(
        [*command, "--host", f"tcp://127.0.0.1:{port}", *tls], stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        assert "listening on" in process.stderr.readline()
        docker_env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{port}"}
        docker_env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")

        def docker(**env: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["docker", "version", "--format", "{{.Server.Version}}"],
                env={**docker_env, **env}, capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        verified = docker(DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certs))
        assert verified.returncode == 0 and verified.stdout.strip(), verified.stderr
        assert docker().returncode != 0, "plain HTTP is not served"
        (certs / "cert.pem").unlink()
        (certs / "key.pem").unlink()
        assert docker(DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certs)).returncode != 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
