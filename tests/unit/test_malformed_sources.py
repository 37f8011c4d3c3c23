"""Image sources whose JSON documents say anything at all: Hoist refuses them with a HoistError
(one clear line from the command) or pushes them whole, never a traceback.

Hypothesis rewrites values anywhere in an OCI layout's ``oci-layout``, ``index.json``, manifest
and config, or in a docker-archive's ``manifest.json`` and config, and re-addresses each
content-addressed document it changed (stored under its new digest, its parent pointed at it
where the parent still can be), so that a change reaches the parser instead of stopping at a
digest check. Each example then opens the source as ``hoist push --from`` does, looks at
everything a push looks at, and pushes each image to the in-memory registry (pure logic; the real
registry's side is in ``tests/integration``): a push that succeeds leaves a manifest whose every
blob the registry holds.

CI runs a fixed set of examples; ``HOIST_FUZZ_EXAMPLES=N`` runs N random ones
(``tests/support/fuzzing.py``).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from engine.api import Engine
from engine.digest import Digest
from engine.errors import HoistError
from engine.image.base import SourceImage, SourceIndex
from engine.image.detect import describe, open_archive
from engine.progress.events import discard
from engine.push.pusher import Pusher
from engine.push.upload import UploadOptions
from engine.reference import parse_normalized_named
from engine.retry import RetryPolicy
from engine.transfer import TransferManager
from tests.support.fuzzing import (
    Change,
    JsonPath,
    apply_change,
    changes_of,
    check_committed,
    fuzz_settings,
    refused,
)
from tests.support.memory_registry import MemoryRegistry, OnePool
from tests.support.sample import LayerSpec, write_docker_archive, write_oci_layout

#: Examples per kind of source in CI.
CI_EXAMPLES = 200


def change_in_order(
    documents: dict[str, Any], changes: list[Change], moved: Callable[[str], str | None]
) -> None:
    """Apply ``changes`` to ``documents``, children first (their order); ``moved(name)`` stores
    a changed document anew, points its parent at it and names the parent (then changed too)."""
    changed: set[str] = set()
    for name in documents:
        for change in changes:
            if change.document == name:
                documents[name] = apply_change(documents[name], change)
                changed.add(name)
        if name in changed and (parent := moved(name)) is not None:
            changed.add(parent)


class Layout:
    """A copy of the sample OCI layout whose documents can be changed and re-addressed."""

    DOCUMENTS = ("config", "manifest", "index.json", "oci-layout")

    def __init__(self, root: Path) -> None:
        self.root = root
        index = self._read("index.json")
        manifest = json.loads(self._blob(index["manifests"][0]["digest"]).read_bytes())
        self.documents = {
            "config": json.loads(self._blob(manifest["config"]["digest"]).read_bytes()),
            "manifest": manifest,
            "index.json": index,
            "oci-layout": self._read("oci-layout"),
        }

    def _read(self, name: str) -> Any:
        return json.loads((self.root / name).read_bytes())

    def _blob(self, digest: str) -> Path:
        parsed = Digest.parse(digest)
        return self.root / "blobs" / parsed.algorithm / parsed.hex

    def change(self, changes: list[Change]) -> Path:
        """Change the documents; the layout to push."""
        change_in_order(self.documents, changes, self._moved)
        for name in ("index.json", "oci-layout"):
            (self.root / name).write_text(json.dumps(self.documents[name]))
        return self.root

    def _moved(self, name: str) -> str | None:
        parent, where = {
            "config": ("manifest", ("config",)),
            "manifest": ("index.json", ("manifests", 0)),
        }.get(name, (None, ()))
        if parent is None:
            return None
        raw = json.dumps(self.documents[name]).encode()
        digest = Digest.of(raw)
        self._blob(digest).write_bytes(raw)
        _readdress(self.documents[parent], where, {"digest": str(digest), "size": len(raw)})
        return parent


class Archive:
    """A copy of the sample docker-archive's files whose documents can be changed; the config's
    name is its digest, so a changed config is renamed and ``manifest.json`` pointed at it."""

    DOCUMENTS = ("config", "manifest.json")

    def __init__(self, root: Path) -> None:
        self.root = root
        manifest = json.loads((root / "manifest.json").read_bytes())
        self.documents = {
            "config": json.loads((root / manifest[0]["Config"]).read_bytes()),
            "manifest.json": manifest,
        }

    def change(self, changes: list[Change]) -> Path:
        """Change the documents; the archive to push, a tar of the files."""
        change_in_order(self.documents, changes, self._moved)
        (self.root / "manifest.json").write_text(json.dumps(self.documents["manifest.json"]))
        tar_path = self.root.with_suffix(".tar")
        with tarfile.open(tar_path, "w") as tar:
            for path in sorted(self.root.rglob("*")):
                tar.add(path, path.relative_to(self.root).as_posix(), recursive=False)
        return tar_path

    def _moved(self, name: str) -> str | None:
        if name != "config":
            return None
        raw = json.dumps(self.documents["config"]).encode()
        config_name = f"{Digest.of(raw).hex}.json"
        (self.root / config_name).write_bytes(raw)
        _readdress(self.documents["manifest.json"], (0,), {"Config": config_name})
        return "manifest.json"


def _readdress(parent: Any, path: JsonPath, fields: dict[str, Any]) -> None:
    """Set ``fields`` in the object at ``path`` in ``parent`` (where a blob is named), if it is
    still an object there."""
    try:
        named = parent
        for step in path:
            named = named[step]
    except (KeyError, IndexError, TypeError):
        return
    if isinstance(named, dict):
        named.update(fields)


async def _open_and_push(root: Path) -> None:
    """What ``hoist push --from`` does with the source's every entry."""
    registry = MemoryRegistry()
    pusher = Pusher(
        OnePool(registry), TransferManager(2), options=UploadOptions(retry=RetryPolicy(attempts=1))
    )
    async with open_archive(root) as archive:
        for n, entry in enumerate(archive.images):
            describe(entry)
            ref = parse_normalized_named(f"localhost:5000/fuzz:v{n}")
            if isinstance(entry, SourceIndex):
                for child in entry.manifests:
                    str(child.platform)
                with refused():
                    entry.select_platform("linux/amd64")
                with refused():
                    await pusher.push_index(ref, entry, discard)
            else:
                with refused():
                    await pusher.push(ref, entry, discard)
            check_committed(registry, f"v{n}")


async def _load(source: Path, root: Path) -> None:
    """What ``hoist load -i`` does with the source: a refused load leaves a store that still
    lists its images (the store's files are replaced whole, or not at all)."""
    async with Engine(root) as engine:
        with refused("load"):
            await engine.load(source)
        await engine.images()


SOURCES = {"oci-layout": Layout, "docker-archive": Archive}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The unchanged files of each kind of source, copied by each example."""
    base = tmp_path_factory.mktemp("samples")
    specs = [LayerSpec(3000, seed=1), LayerSpec(5000, seed=2)]
    write_oci_layout(base / "oci-layout", specs)
    archive = base / "docker-archive.tar"
    write_docker_archive(archive, specs, ["fuzz/app:v1"], base / "tars")
    with tarfile.open(archive) as tar:
        tar.extractall(base / "docker-archive", filter="tar")
    return {kind: base / kind for kind in SOURCES}


def _changed_copy(samples: dict[str, Path], kind: str, tmp: str) -> Layout | Archive:
    root = Path(tmp) / kind
    shutil.copytree(samples[kind], root, symlinks=True)
    return SOURCES[kind](root)


@fuzz_settings(CI_EXAMPLES)
@given(data=st.data())
@pytest.mark.parametrize("kind", SOURCES)
def test_a_changed_source_is_pushed_or_refused_with_one_error(
    samples: dict[str, Path], kind: str, data: st.DataObject
) -> None:
    changes = data.draw(changes_of(SOURCES[kind].DOCUMENTS), label="changes")
    with tempfile.TemporaryDirectory() as tmp:
        source = _changed_copy(samples, kind, tmp).change(changes)
        try:
            anyio.run(_open_and_push, source)
        except HoistError as refusal:  # the command prints it as one line
            event(f"open: {type(refusal).__name__}")
        anyio.run(_load, source, Path(tmp) / "store")


@pytest.mark.parametrize("kind", SOURCES)
def test_an_unchanged_source_pushes(samples: dict[str, Path], kind: str) -> None:
    """The changed sources start from ones that push, through the same copy: what the changes
    find is what they changed."""
    registry = MemoryRegistry()

    async def push(source: Path) -> None:
        pusher = Pusher(OnePool(registry), TransferManager(2))
        async with open_archive(source) as archive:
            (image,) = archive.images
            assert isinstance(image, SourceImage)
            await pusher.push(parse_normalized_named("localhost:5000/fuzz:v0"), image, discard)

    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(push, _changed_copy(samples, kind, tmp).change([]))
    assert "v0" in registry.manifests
    check_committed(registry, "v0")
