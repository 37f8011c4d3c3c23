"""Run CNCF Distribution (Debian's ``docker-registry``) on a free loopback port: anonymous, http.

The demo pushes to it; the tests and the benchmarks start it from here too, and their kit
(``tests/support/registry.py``) adds the variants users meet (Basic auth, token auth, TLS) on
top of these pieces, so every one of them pushes to the real thing. Everything here blocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARY = "docker-registry"

#: What ``/v2/`` answers once the registry serves: 200 when open, 401 when it wants credentials.
_READY_STATUSES = (200, 401)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registry_config(storage: Path, port: int, *, access_log: bool = False) -> dict[str, Any]:
    """The configuration of an anonymous http registry on ``127.0.0.1:port``."""
    return {
        "version": "0.1",
        "log": {
            "level": "info" if access_log else "error",
            "accesslog": {"disabled": not access_log},
        },
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "cache": {"blobdescriptor": "inmemory"},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "hoist-local-test-secret"},
    }


@dataclass
class LocalRegistry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``; ``storage`` its filesystem root."""

    port: int
    storage: Path
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def ssl_context(self, *, client: bool = True) -> ssl.SSLContext | None:
        """What a client needs to trust the registry: nothing over http. A registry serving https
        answers a context that trusts its CA (and, if ``client``, presents a client pair)."""
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def storage_dir(workdir: Path) -> Path:
    """The registry's filesystem root under ``workdir``, created."""
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    return storage


def spawn(workdir: Path, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start ``docker-registry serve`` on ``config`` (written to ``workdir``), logging to
    ``workdir/registry.log``; it is not serving yet (see ``wait_ready``)."""
    if shutil.which(BINARY) is None:
        raise RuntimeError(f"{BINARY} not found: install the Debian package docker-registry")
    path = workdir / "config.yml"
    # JSON is YAML too, and it quotes every path safely.
    path.write_text(json.dumps(config, indent=2))
    log = (workdir / "registry.log").open("wb")
    # REGISTRY_* variables override the config file: one from the environment would change it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    process = subprocess.Popen(
        [BINARY, "serve", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    log.close()
    return process


def start_registry(workdir: Path, *, access_log: bool = False) -> LocalRegistry:
    """Start an anonymous http registry with its config and storage under ``workdir``; wait
    until it answers."""
    port = free_port()
    storage = storage_dir(workdir)
    process = spawn(workdir, registry_config(storage, port, access_log=access_log))
    registry = LocalRegistry(port=port, storage=storage, process=process, workdir=workdir)
    wait_ready(registry)
    return registry


def _ping_status(registry: LocalRegistry) -> int:
    # No proxy: a proxy from the environment must never stand between a client and loopback.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=registry.ssl_context())
    )
    try:
        with opener.open(f"{registry.url}/v2/", timeout=1) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def wait_ready(registry: LocalRegistry, timeout: float = 20.0) -> None:
    """Return once ``/v2/`` answers; stop the registry and raise if it exits or never does."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(f"registry exited at start:\n{registry.log()}")
        try:
            status = _ping_status(registry)
            if status in _READY_STATUSES:
                return
            last = f"/v2/ answered {status}"
        # Refused connections and TLS errors (URLError and ssl.SSLError are OSErrors too) mean
        # "not yet"; the last one is reported if it never answers.
        except OSError as error:
            last = repr(error)
        time.sleep(0.05)
    registry.stop()
    raise RuntimeError(f"registry did not answer within {timeout} s ({last}):\n{registry.log()}")


@contextlib.contextmanager
def running_registry(
    workdir: Path | None = None, *, access_log: bool = False
) -> Iterator[LocalRegistry]:
    """An anonymous http registry for the duration of a ``with`` block, its files removed
    afterwards when ``workdir`` is None."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hoist-registry-"))
            workdir = Path(tmp)
        registry = start_registry(workdir, access_log=access_log)
        stack.callback(registry.stop)
        yield registry
