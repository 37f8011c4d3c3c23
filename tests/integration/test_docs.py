"""Every ```python block of the docs runs as a user runs it, against a real registry.

The docs are README.md, the other top-level ``*.md`` files and every page under ``docs/``. Each
block is a whole program; it runs in a fresh interpreter (``sys.executable -c``, its own
``asyncio.run``) with a timeout. What a block may take for granted, and the test arranges:

- ``localhost:5000`` is the registry: the test writes a registry of its own, started for that
  block alone (``127.0.0.1:PORT``), in its place; nothing else in the block is changed;
- the working directory is empty but for ``app.tar``, a ``docker save`` archive of one image
  tagged ``app:v1`` (two small layers);
- ``Engine()`` finds an empty store (``$HOIST_ROOT``) and an empty Docker config
  (``$DOCKER_CONFIG``): no credentials;
- a block that passes ``relogin=`` gets a registry that wants Basic auth instead, and its user and
  password in ``$CI_REGISTRY_USER`` / ``$CI_REGISTRY_PASSWORD``: with nothing stored, the callback
  is the only way in.

A block passes when it exits 0 and every push it reports, a line holding
``HOST/REPO:TAG@sha256:…`` as ``hoist push -q`` prints, is in the registry: skopeo, an independent
client, reads the manifest under that tag (its digest the one reported) and copies every blob it
names. It must report at least one push, so a block that pushes nothing fails.

Every runnable block also passes ``mypy --strict`` against this checkout, as a user's program
that is type-checked would.

A block that is deliberately not runnable has ``<!-- not run: REASON -->`` on the line before its
fence: it is reported as skipped with that reason. There are none today.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.demo.registry import running_registry
from tests.support.clients import ROOT, Skopeo
from tests.support.registry import LocalRegistry, SecuredRegistry
from tests.support.sample import LayerSpec, write_docker_archive

pytestmark = pytest.mark.integration

#: The registry the examples name; the test puts its own in its place.
EXAMPLE_REGISTRY = "localhost:5000"
#: How long one block may run: it pushes a few hundred KiB to loopback.
BLOCK_TIMEOUT = 120

_FENCE = re.compile(r"^```python\s*$")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.+?)\s*-->$")


@dataclass(frozen=True)
class Block:
    """One ```python block: where it is, its code, and why it is not run (if it is not)."""

    path: Path
    line: int  # of the opening fence, from 1
    code: str
    not_run: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path, text: str) -> list[Block]:
    """The ```python blocks of one Markdown text, with their ``not run`` markers."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if not _FENCE.match(lines[index]):
            index += 1
            continue
        start = index
        end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```"), None)
        assert end is not None, f"{path}:{start + 1}: a ```python block that never closes"
        before = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marker = _NOT_RUN.match(before)
        code = "\n".join(lines[start + 1 : end]) + "\n"
        blocks.append(Block(path, start + 1, code, marker["reason"] if marker else None))
        index = end + 1
    return blocks


def doc_pages() -> list[Path]:
    return sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").rglob("*.md"))


def all_blocks() -> list[Block]:
    return [block for page in doc_pages() for block in python_blocks(page, page.read_text())]


BLOCKS = all_blocks()


def test_the_docs_have_the_examples_this_test_promises() -> None:
    """README's Library example and the cookbook's four recipes are found (and so run below)."""
    pages = {block.path.relative_to(ROOT).as_posix() for block in BLOCKS}
    assert "README.md" in pages
    assert sum(block.path.name == "cookbook.md" for block in BLOCKS) >= 4
    assert all(EXAMPLE_REGISTRY in block.code for block in BLOCKS if block.not_run is None)


def test_blocks_are_found_with_their_markers() -> None:
    text = "\n".join(
        [
            "# Page",
            "```python",
            "print(1)",
            "```",
            "```sh",
            "echo not python",
            "```",
            "<!-- not run: needs a real Docker Hub account -->",
            "",
            "```python",
            "print(2)",
            "```",
        ]
    )
    found = python_blocks(ROOT / "page.md", text)
    assert [(b.line, b.code, b.not_run) for b in found] == [
        (2, "print(1)\n", None),
        (10, "print(2)\n", "needs a real Docker Hub account"),
    ]


def test_doc_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    runnable = [block for block in BLOCKS if block.not_run is None]
    files = []
    for number, block in enumerate(runnable):
        path = tmp_path / f"block_{number}.py"  # one module name each: mypy checks them together
        path.write_text(block.code)
        files.append(path.name)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), *files],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    names = "\n".join(f"{file}: {block.name}" for file, block in zip(files, runnable, strict=True))
    assert checked.returncode == 0, f"{checked.stdout}{checked.stderr}\n{names}"


@dataclass(frozen=True)
class Target:
    """The registry a block pushes to, and the credentials skopeo reads it back with."""

    host: str
    creds: str | None = None


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    """An empty working directory but for ``app.tar`` (``app:v1``)."""
    work = tmp_path / "work"
    work.mkdir()
    layers = [LayerSpec(384 * 1024, 131), LayerSpec(128 * 1024, 132)]
    write_docker_archive(work / "app.tar", layers, ["app:v1"], tmp_path / "layers")
    return work


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """An anonymous registry for one block: what it holds afterwards, that block pushed."""
    with running_registry(tmp_path / "registry") as registry:
        yield registry


def _pushes_reported(output: str, host: str) -> list[tuple[str, str]]:
    """Each ``HOST/REPO:TAG@DIGEST`` in ``output``: (``HOST/REPO:TAG``, ``DIGEST``)."""
    pushed = re.escape(host) + r"/[a-z0-9._/-]+:\w[\w.-]*"
    return re.findall(f"({pushed})@(sha256:[0-9a-f]{{64}})", output)


def _skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["skopeo", *args], capture_output=True, timeout=120, check=False)


def _assert_in_registry(target: Target, ref: str, digest: str, copy_to: Path) -> None:
    creds = [f"--creds={target.creds}"] if target.creds else []
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", *creds, f"docker://{ref}")
    assert raw.returncode == 0, f"{ref} is not in the registry: {raw.stderr.decode()}"
    assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == digest, f"{ref} is another image"
    src_creds = [f"--src-creds={target.creds}"] if target.creds else []
    copied = _skopeo(
        "copy", "--src-tls-verify=false", *src_creds, f"docker://{ref}", f"oci:{copy_to}:pulled"
    )
    assert copied.returncode == 0, f"{ref} names blobs the registry lacks: {copied.stderr.decode()}"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_doc_block_runs_and_its_pushes_land(
    block: Block,
    sample_dir: Path,
    tmp_path: Path,
    skopeo: Skopeo,  # its fixture fails the test when skopeo is not installed
    request: pytest.FixtureRequest,
) -> None:
    if block.not_run is not None:
        pytest.skip(f"{block.name} is marked not run: {block.not_run}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_REGISTRY_")}
    env |= {
        "HOIST_ROOT": str(tmp_path / "hoist-root"),
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    }
    if "relogin=" in block.code:
        secured: SecuredRegistry = request.getfixturevalue("basic_auth_registry")
        target = Target(secured.host, secured.creds)
        env |= {"CI_REGISTRY_USER": secured.username, "CI_REGISTRY_PASSWORD": secured.password}
    else:
        target = Target(request.getfixturevalue("fresh_registry").host)

    code = block.code.replace(EXAMPLE_REGISTRY, target.host)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=sample_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )

    print(done.stdout)
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"
    reported = _pushes_reported(done.stdout, target.host)
    assert reported, f"{block.name} reports no push (HOST/REPO:TAG@sha256:…):\n{done.stdout}"
    for number, (ref, digest) in enumerate(reported):
        _assert_in_registry(target, ref, digest, tmp_path / f"pulled-{number}")
