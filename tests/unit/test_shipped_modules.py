"""What a plain install ships imports without the test extras or the test kit.

``pip install .`` installs the ``engine`` package and ``cli`` with the dependencies of
``[project]`` alone; the test extras (``cryptography``, ``bcrypt``, pytest, ...) and
``tests/support`` are not there. A fresh interpreter in which those cannot be imported must still
import every shipped module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Top-level names a plain install lacks: the test extras that have modules, and the checkout's
#: test and benchmark packages.
ABSENT = ("cryptography", "bcrypt", "pytest", "hypothesis", "blockbuster", "tests", "benchmarks")

_PROBE = """
import importlib, importlib.abc, json, pkgutil, sys

ABSENT = set(sys.argv[1].split(","))

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (absent from a plain install)")
        return None

sys.meta_path.insert(0, Absent())
import engine

failed = {}
def failed_package(name):
    failed[name] = repr(sys.exc_info()[1])

names = ["cli", "engine"]
names += [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.", failed_package)]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed[name] = repr(error)
imported = sorted(set(names) - set(failed))
print(json.dumps({"from": engine.__file__, "imported": imported, "failed": failed}))
"""


def _probe(script: str, *, check: bool) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter: this one has imported the test kit and its dependencies long ago.
    return subprocess.run(
        [sys.executable, "-c", script, ",".join(ABSENT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def _import_all_shipped() -> dict[str, object]:
    result: dict[str, object] = json.loads(_probe(_PROBE, check=True).stdout)
    return result


def test_every_shipped_module_imports_without_the_test_extras_or_the_kit() -> None:
    result = _import_all_shipped()
    # This checkout's engine, not another install's.
    assert Path(str(result["from"])).is_relative_to(ROOT)
    assert result["failed"] == {}
    imported = result["imported"]
    assert isinstance(imported, list)
    # The walk found the package's depths, the demo included, not just its top.
    for name in ("cli", "engine.api", "engine.demo.__main__", "engine.demo.sample"):
        assert name in imported


def test_the_probe_does_block_the_test_extras() -> None:
    # Without this, a finder that blocked nothing would let the test above pass vacuously.
    script = (
        _PROBE.split("sys.meta_path.insert(0, Absent())")[0]
        + "sys.meta_path.insert(0, Absent())\n"
        + "import cryptography\n"
    )
    answer = _probe(script, check=False)
    assert answer.returncode != 0
    assert "absent from a plain install" in answer.stderr
