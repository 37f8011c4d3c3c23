"""A store whose small files say anything at all: ``hoist images`` and ``hoist push`` read it or
refuse with a HoistError (one clear line from the command), never a traceback, and a push that
succeeds is whole.

The sample store holds one loaded image that was pushed once, so that Docker's distribution
metadata (which blob went where) is there too. Hypothesis then changes one or more of its small
files (``repositories.json``, the image config, a layer's ``diff``/``size``/``cache-id``, the
push records): a value inside a JSON document, the whole content, a truncation, or the file
gone. Each example lists the images and pushes the tag again (which must succeed when only push
records were damaged: they are hints), to a registry in memory that holds
nothing or already holds the image (pure logic; the real registry's side is in
``tests/integration``). ``HOIST_FUZZ_EXAMPLES=N`` runs N random examples.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from engine.api import Engine
from engine.progress.events import discard
from engine.push.compression import DEFAULT
from engine.push.pusher import Pusher
from engine.push.upload import UploadOptions
from engine.reference import parse_normalized_named
from engine.retry import RetryPolicy
from engine.transfer import TransferManager
from tests.support.fuzzing import (
    VALUES,
    Change,
    apply_change,
    check_committed,
    fuzz_settings,
    refused,
)
from tests.support.memory_registry import MemoryRegistry, OnePool
from tests.support.sample import LayerSpec, write_docker_archive

TAG = "localhost:5000/fuzz/app:v1"
#: Files up to this size may be damaged: every file of the sample store, its small layer tars too.
SMALL_FILE = 64 << 10


@dataclass(frozen=True)
class Damage:
    """What happens to one file of the store (``which``: its index, modulo their number)."""

    which: int
    how: str  # "change" a JSON value, "replace" the content, "truncate", "delete"
    change: Change
    content: bytes


DAMAGE = st.builds(
    Damage,
    st.integers(0, 1000),
    st.sampled_from(["change", "replace", "truncate", "delete"]),
    st.builds(Change, st.just("file"), st.integers(0, 1000), VALUES, st.booleans()),
    st.binary(max_size=40) | st.text(max_size=40).map(str.encode),
)


def _small_files(root: Path) -> list[Path]:
    return sorted(
        path for path in root.rglob("*") if path.is_file() and path.stat().st_size <= SMALL_FILE
    )


def _damage(path: Path, damage: Damage) -> str:
    """Do ``damage`` to ``path``; what was done, for the Hypothesis event."""
    if damage.how == "delete":
        path.unlink()
        return "delete"
    if damage.how == "truncate":
        path.write_bytes(path.read_bytes()[: damage.which % (path.stat().st_size + 1)])
        return "truncate"
    if damage.how == "change":
        try:
            document = json.loads(path.read_bytes())
        except ValueError:
            pass
        else:
            path.write_text(json.dumps(apply_change(document, damage.change)))
            return "change"
    path.write_bytes(damage.content)
    return "replace"


async def _push(root: Path, registry: MemoryRegistry, *, records_only: bool) -> None:
    """``hoist images``, then ``hoist push TAG`` as the Engine does it from the store. When only
    push records were damaged the push must go through: they are hints, as in Docker."""
    async with Engine(root) as engine:
        with refused("images"):
            await engine.images()
        if records_only:
            await _push_tag(engine, registry)
            assert "v1" in registry.manifests
        else:
            with refused("push"):
                await _push_tag(engine, registry)
        check_committed(registry, "v1")


def _is_push_record(path: Path) -> bool:
    """Docker's distribution metadata, and Hoist's record of what it compressed each layer to."""
    return "distribution" in path.parts or "compressed" in path.parts


async def _push_tag(engine: Engine, registry: MemoryRegistry) -> None:
    pusher = Pusher(
        OnePool(registry),
        TransferManager(2),
        engine.store,
        options=UploadOptions(retry=RetryPolicy(attempts=1)),
    )
    image, known = await engine.store.image_to_push(TAG, DEFAULT.compressor)
    await pusher.push(parse_normalized_named(TAG), image, discard, known)


@dataclass(frozen=True)
class Sample:
    root: Path
    #: The registry after the sample's push: it holds the image.
    registry: MemoryRegistry


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    base = tmp_path_factory.mktemp("store")
    archive = base / "image.tar"
    write_docker_archive(
        archive, [LayerSpec(3000, seed=1), LayerSpec(5000, seed=2)], [TAG], base / "tars"
    )
    registry = MemoryRegistry()

    async def load_and_push() -> None:
        async with Engine(base / "root") as engine:
            await engine.load(archive)
            await _push_tag(engine, registry)

    anyio.run(load_and_push)
    assert "v1" in registry.manifests, "the sample store must push before it is damaged"
    return Sample(base / "root", registry)


def test_the_sample_store_records_its_push(sample: Sample) -> None:
    """The damage can reach the push records: the sample push wrote them."""
    assert any("distribution" in path.parts for path in _small_files(sample.root))


@fuzz_settings(300)
@given(damages=st.lists(DAMAGE, min_size=1, max_size=3), holds=st.booleans())
def test_a_damaged_store_is_read_or_refused_with_one_error(
    sample: Sample, damages: list[Damage], holds: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(sample.root, root, symlinks=True)
        damaged = []
        for damage in damages:
            files = _small_files(root)
            if files:
                damaged.append(files[damage.which % len(files)])
                event(f"damage: {_damage(damaged[-1], damage)}")
        registry = copy.deepcopy(sample.registry) if holds else MemoryRegistry()
        records_only = all(_is_push_record(path.relative_to(root)) for path in damaged)
        anyio.run(partial(_push, root, registry, records_only=records_only))


def test_a_push_record_that_cannot_be_read_does_not_stop_the_push(sample: Sample) -> None:
    """Found by the search above: a garbled ``diffid-by-digest`` file failed the push that tried
    to forget a location (the registry had lost the blob) instead of uploading it."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(sample.root, root, symlinks=True)
        records = sorted((root / "distribution" / "diffid-by-digest").rglob("*"))
        for record in (r for r in records if r.is_file()):
            record.write_bytes(b"garbage")
        registry = MemoryRegistry()  # holds nothing: each recorded location is wrong

        async def push() -> None:
            async with Engine(root) as engine:
                await _push_tag(engine, registry)

        anyio.run(push)
        check_committed(registry, "v1")
        assert "v1" in registry.manifests

        # The records were used (a HEAD or mount of each recorded location) and then forgotten.
        assert registry.calls["head_blob"] + registry.calls["mount_blob"] > 0, registry.calls
