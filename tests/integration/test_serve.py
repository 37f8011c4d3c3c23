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
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.clients import ROOT, Skopeo
from tests.support.registry import LocalRegistry, SecuredRegistry
from tests.support.sample import LayerSpec, write_docker_archive

pytestmark = pytest.mark.integration

KiB = 1024
LAYERS = [LayerSpec(160 * KiB, 1401), LayerSpec(48 * KiB, 1402)]


@dataclass
class Daemon:
    """A running ``hoist serve`` and a docker CLI pointed at it."""

    process: subprocess.Popen[str]
    socket: Path
    docker_config: Path
    log: str | None = None

    def docker(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.docker_config),
        }
        return subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=env,
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


def test_version_shows_the_server(daemon: Daemon) -> None:
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
