"""A user's program, type-checked with ``mypy --strict`` against Hoist installed from its wheel
(not this checkout): the public names are seen, and a name that is not one is an error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import ROOT

pytestmark = pytest.mark.integration

USER_PROGRAM = """
    import asyncio

    from engine import (
        AuthConfig,
        BatchItem,
        Engine,
        HoistError,
        LayerOutcome,
        ProgressEvent,
        PushResult,
        RetryPolicy,
        Timeouts,
    )


    async def main() -> list[PushResult]:
        queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        policy, timeouts = RetryPolicy(attempts=3), Timeouts(connect=5.0)
        async with Engine(retry=policy, timeouts=timeouts) as engine:
            await engine.login("localhost:5000", AuthConfig(username="u", password="p"))
            first = await engine.push("localhost:5000/app:v1", progress=queue)
            items: list[BatchItem] = await engine.push_many(["localhost:5000/app:v2"])
        pushed = [item.result for item in items if item.result is not None]
        failed: list[HoistError] = [item.error for item in items if item.error is not None]
        assert all(layer.outcome in LayerOutcome for layer in first.layers) and not failed
        return [first, *pushed]
"""


def _run(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Without PYTHONPATH: a checkout named there would shadow the installed wheel. And without
    # the suite's warnings-as-errors: pip and mypy are not Hoist, and warn about themselves.
    unset = {"PYTHONPATH", "PYTHONWARNINGS", "PYTHONDEVMODE"}
    env = {key: value for key, value in os.environ.items() if key not in unset}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding Hoist's wheel, and the rest (aiohttp, ...) from this interpreter."""
    work = tmp_path_factory.mktemp("wheel")
    built = _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", str(work), str(ROOT), cwd=work,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", "--system-site-packages", str(venv), cwd=work)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    wheel = next(work.glob("hoist-*.whl"))
    added = _run(str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel), cwd=work)
    assert added.returncode == 0, added.stderr
    yield python


def _mypy(python: Path, program: str, where: Path) -> subprocess.CompletedProcess[str]:
    # Run from outside the checkout, so that only the installed package can be found.
    (where / "program.py").write_text(textwrap.dedent(program))
    return _run(
        sys.executable, "-m", "mypy", "--strict", "--no-incremental",
        "--python-executable", str(python), "program.py", cwd=where,
    )  # fmt: skip


def test_the_wheel_says_it_is_typed(installed: Path) -> None:
    shown = _run(
        str(installed), "-c", "import engine, pathlib; print(engine.__file__)", cwd=Path("/")
    )
    package = Path(shown.stdout.strip()).parent
    assert not package.is_relative_to(ROOT), "the wheel's copy, not the checkout"
    assert (package / "py.typed").is_file()


def test_a_user_program_passes_mypy_strict(installed: Path, tmp_path: Path) -> None:
    checked = _mypy(installed, USER_PROGRAM, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("program", "complaint"),
    [
        ("from engine import Engin\n", 'Module "engine" has no attribute "Engin"'),
        ("import engine\nengine.Engine(retry=3)\n", 'incompatible type "int"'),
        # A value (engine.value.Value) is frozen for the type checker too, not just at run time.
        (
            "import engine\ncredentials = engine.AuthConfig(username='u')\n"
            "credentials.username = 'v'\n",
            '"username" defined in "AuthConfig" is read-only',
        ),
    ],
    ids=["a misspelt name", "a wrong argument", "an assigned field"],
)
def test_a_mistake_fails_mypy(
    installed: Path, tmp_path: Path, program: str, complaint: str
) -> None:
    checked = _mypy(installed, program, tmp_path)
    assert checked.returncode == 1
    assert complaint in checked.stdout
