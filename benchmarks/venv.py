"""The harness's own virtual environments: one for the Python peers and matplotlib, and one that
Hoist is installed into, as a user installs it.

python-dxf, oras-py and docker-registry-client-async are peers, not dependencies of Hoist, and
matplotlib only draws the chart: they live in a venv of their own under the user's cache
(``~/.cache/hoist-bench/venv`` by default), created with ``python -m venv`` and filled with
``pip install`` the first time, and reused afterwards. The harness says what it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from benchmarks.process import BenchmarkError, run_checked
from benchmarks.report import say

#: The PyPI packages the venv holds, and the module each is imported as.
PACKAGES = {
    "python-dxf": "dxf",
    "oras": "oras",
    "docker-registry-client-async": "docker_registry_client_async",
    "matplotlib": "matplotlib",
}


def default_venv() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hoist-bench" / "venv"


def ensure_venv(venv: Path, *, timeout: float = 900.0) -> Path:
    """The venv's python, after creating the venv and installing what it lacks."""
    python = venv / "bin" / "python"
    if not python.exists():
        argv = ["python3", "-m", "venv", str(venv)]
        say(f"creating the harness's venv: {' '.join(argv)}")
        run_checked(argv, timeout=timeout)
    missing = [name for name, module in PACKAGES.items() if not _imports(python, module)]
    if missing:
        argv = [str(python), "-m", "pip", "install", "--quiet", *missing]
        say(f"installing into it: {' '.join(argv)}")
        run_checked(argv, timeout=timeout)
    return python


def _imports(python: Path, module: str) -> bool:
    done = subprocess.run(
        [str(python), "-c", f"import {module}"], capture_output=True, timeout=120, check=False
    )
    return done.returncode == 0


def versions(python: Path) -> dict[str, str]:
    """The installed version of each package, recorded with the results."""
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    try:
        out = run_checked([str(python), "-c", code, *PACKAGES], timeout=120)
    except BenchmarkError as exc:
        return {"error": str(exc)}
    found: dict[str, str] = json.loads(out)
    return found


def default_hoist_venv() -> Path:
    return default_venv().with_name("hoist")


def install_hoist(venv: Path, checkout: Path, *, timeout: float = 900.0) -> list[str]:
    """The ``hoist`` command of ``checkout`` installed (not editable) into a venv of its own.

    An installed Hoist starts as a user's does: its modules byte-compiled by pip, and no
    editable-install finder or checkout on ``sys.path`` in front of every import (about 20 ms
    of each command's start here). The checkout is installed anew every time: it changes.
    """
    python = venv / "bin" / "python"
    if not python.exists():
        argv = ["python3", "-m", "venv", str(venv)]
        say(f"creating a venv for Hoist: {' '.join(argv)}")
        run_checked(argv, timeout=timeout)
    argv = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    say(f"installing this checkout's Hoist into it: {' '.join(argv)} --force-reinstall {checkout}")
    run_checked([*argv, str(checkout)], timeout=timeout)  # its dependencies, once
    run_checked([*argv, "--force-reinstall", "--no-deps", str(checkout)], timeout=timeout)
    return [str(venv / "bin" / "hoist")]
