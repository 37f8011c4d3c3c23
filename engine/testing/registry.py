"""Run CNCF Distribution (Debian's ``docker-registry``) on a free loopback port.

Used by the test fixtures, the benchmarks and the demo, so all three push to the real thing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BINARY = "docker-registry"

_CONFIG = """\
version: 0.1
log:
  level: {log_level}
  accesslog:
    disabled: {access_log_disabled}
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: hoist-local-test-secret
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    def url(self) -> str:
        return f"http://{self.host}"

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


def start_registry(workdir: Path, *, access_log: bool = False) -> LocalRegistry:
    """Start a registry with its config and storage under ``workdir``; wait until it answers."""
    if shutil.which(BINARY) is None:
        raise RuntimeError(f"{BINARY} not found: install the Debian package docker-registry")
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yml"
    config.write_text(
        _CONFIG.format(
            log_level="info" if access_log else "error",
            access_log_disabled="false" if access_log else "true",
            storage=storage,
            port=port,
        )
    )
    log = (workdir / "registry.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    process = subprocess.Popen(
        [BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    log.close()
    registry = LocalRegistry(port=port, storage=storage, process=process, workdir=workdir)
    _wait_ready(registry)
    return registry


def _wait_ready(registry: LocalRegistry, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(f"registry exited at start:\n{registry.log()}")
        try:
            with urllib.request.urlopen(f"{registry.url}/v2/", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    registry.stop()
    raise RuntimeError(f"registry did not answer within {timeout} s:\n{registry.log()}")


@contextlib.contextmanager
def running_registry(
    workdir: Path | None = None, *, access_log: bool = False
) -> Iterator[LocalRegistry]:
    """A registry for the duration of a ``with`` block, its files removed afterwards."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hoist-registry-"))
            workdir = Path(tmp)
        registry = start_registry(workdir, access_log=access_log)
        stack.callback(registry.stop)
        yield registry
