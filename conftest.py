"""Fixtures that start real components: a Distribution registry on loopback, skopeo to read back.

Nothing here fakes the registry: integration tests push to ``docker-registry serve`` and read
back with ``skopeo``, an independent client. Both come from Debian packages that ``.ci/run``
installs; a machine without them fails loudly instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from blockbuster import blockbuster_ctx

from tests.support.registry import LocalRegistry, start_registry

ROOT = Path(__file__).resolve().parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_blocking_calls_in_the_loop() -> Iterator[None]:
    """Fail any test in which Hoist's own code blocks the event loop (file or socket I/O)."""
    with blockbuster_ctx(["engine"]):
        yield


def _require(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: apt-get install {package} (.ci/run does this)")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """One registry for the session; tests keep apart by repository names."""
    _require("docker-registry", "docker-registry")
    running = start_registry(tmp_path_factory.mktemp("registry"))
    yield running
    running.stop()


@pytest.fixture
def hoist_root(tmp_path: Path) -> Path:
    return tmp_path / "hoist-root"


@dataclass
class Skopeo:
    """The independent reader of what Hoist pushed."""

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["skopeo", *args], capture_output=True, text=True, timeout=300, check=False
        )

    def raw_manifest(self, ref: str) -> bytes:
        answer = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert answer.returncode == 0, answer.stderr.decode()
        return answer.stdout

    def manifest_exists(self, ref: str) -> bool:
        answer = self.run("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
        return answer.returncode == 0

    def copy_to_oci(self, ref: str, layout: Path, tag: str = "pulled") -> None:
        answer = self.run(
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            f"docker://{ref}",
            f"oci:{layout}:{tag}",
        )
        assert answer.returncode == 0, answer.stderr

    def digest(self, ref: str) -> str:
        answer = self.run("inspect", "--tls-verify=false", f"docker://{ref}")
        assert answer.returncode == 0, answer.stderr
        return str(json.loads(answer.stdout)["Digest"])


@pytest.fixture(scope="session")
def skopeo() -> Skopeo:
    _require("skopeo", "skopeo")
    return Skopeo()


@dataclass
class Hoist:
    """The CLI as a user runs it: a real process, its exit code, its two streams."""

    root: Path
    #: Environment added to the process's for every call (DOCKER_CONFIG, HOIST_CERTS_D, ...).
    env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "--root", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            input=input,
            env={**os.environ, **self.env},
        )
        if check:
            assert result.returncode == 0, f"hoist {args} failed:\n{result.stderr}"
        return result


@pytest.fixture
def hoist(hoist_root: Path, tmp_path: Path) -> Hoist:
    """The CLI with its own store and its own, empty, config.json directory."""
    return Hoist(hoist_root, env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
