"""The two clients the integration tests drive: Hoist's CLI as a user runs it, and skopeo, an
independent client that reads back what Hoist pushed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: The checkout's root, where ``cli.py`` is.
ROOT = Path(__file__).resolve().parents[2]


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
