"""A model-based search (Hypothesis) for pushes that name blobs their repository lacks.

Images are drawn from a small pool of layer contents, so they overlap; each is pushed from the
store, a docker-archive (plain or of another compressor's gzip layers), an OCI layout or archive
of another compressor's blobs (or of uncompressed ones), an index, or in a batch, to one of a
few repositories of one real registry, by one long-lived Engine. In between, tags are removed,
the store's push metadata is deleted, blobs and manifests are deleted through the registry's
API, and the Engine starts again on a fresh store. After every push the registry itself is
asked: the tag names the manifest Hoist returned, and the repository holds every blob it names.

CI runs a fixed, derandomized number of examples; ``HOIST_MODEL_EXAMPLES=N`` runs N random
ones (a failure prints the blob that replays it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine import Engine
from engine.errors import HoistError
from engine.progress.events import Message, ProgressEvent
from engine.push.image import MANIFEST_RECHECK
from engine.push.result import PushResult
from tests.integration.registry_api import (
    assert_pushed_whole,
    delete_blob,
    delete_manifest,
    manifest,
)
from tests.support.registry import LocalRegistry, running_registry
from tests.support.sample import (
    ZLIB_9_GZIP,
    LayerSpec,
    write_docker_archive,
    write_oci_archive,
    write_oci_index_layout,
    write_oci_layout,
)

pytestmark = pytest.mark.integration

KiB = 1024
#: Layer contents images are made of: few, so that images share layers.
POOL = [LayerSpec(size, seed) for seed, size in enumerate([3 * KiB, 5 * KiB, 1 * KiB, 0, 6 * KiB])]
REPOSITORIES = ["alpha", "beta", "team/gamma"]
TAGS = ["v1", "v2"]
SOURCES = ["store", "docker-archive", "gzip-archive", "oci-layout", "oci-archive", "uncompressed"]

#: Examples in CI: derandomized, so every run tries the same ones.
CI_EXAMPLES = 40
EXAMPLES = int(os.environ.get("HOIST_MODEL_EXAMPLES", "0"))


@dataclass
class SampleSet:
    """One image of the model, and the sources written of it (each written when first used)."""

    number: int
    layers: tuple[LayerSpec, ...]
    directory: Path
    written: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Its name in the store: never a registry's, so only a tag pushes it anywhere."""
        return f"model/image{self.number}:latest"

    def source(self, kind: str) -> Path:
        if kind not in self.written:
            self.written[kind] = self._write(kind, self.directory / kind)
        return self.written[kind]

    def _write(self, kind: str, path: Path) -> Path:
        work = self.directory / "work"
        if kind == "docker-archive":
            write_docker_archive(path, self.layers, [self.name], work)
        elif kind == "gzip-archive":
            write_docker_archive(path, self.layers, [self.name], work, gzip=ZLIB_9_GZIP)
        elif kind == "oci-layout":
            write_oci_layout(path, self.layers, gzip=ZLIB_9_GZIP)
        elif kind == "uncompressed":
            write_oci_layout(path, self.layers, gzip=None)
        elif kind == "oci-archive":
            write_oci_archive(path, self.source("oci-layout"))
        elif kind == "index":
            platforms = [("linux", "amd64", None), ("linux", "arm64", "v8")]
            write_oci_index_layout(
                path, platforms, [self.layers, self.layers[:1]], gzip=ZLIB_9_GZIP
            )
        return path


class PushModel(RuleBasedStateMachine):
    """What the registry, the store and the Engine hold, and the pushes that must keep it true."""

    registry: LocalRegistry
    workdir: Path
    examples = 0
    pushes = 0

    images = Bundle("images")

    def __init__(self) -> None:
        super().__init__()
        PushModel.examples += 1
        self.prefix = f"model{PushModel.examples}"
        self.directory = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir=self.workdir))
        self.stack = ExitStack()
        self.portal: BlockingPortal = self.stack.enter_context(start_blocking_portal())
        self.stores = 0
        self.loaded: set[int] = set()
        self.samples: list[SampleSet] = []
        #: Repositories and tags pushed, to delete from.
        self.pushed: dict[tuple[str, str], PushResult] = {}
        self.engine = self._start()

    def _start(self) -> Engine:
        self.stores += 1
        self.loaded.clear()
        engine = Engine(self.directory / f"store{self.stores}")
        self.portal.call(engine.__aenter__)
        return engine

    def teardown(self) -> None:
        self.portal.call(self.engine.aclose)
        self.stack.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _target(self, repository: str, tag: str) -> str:
        return f"{self.registry.host}/{self.prefix}/{repository}:{tag}"

    # -- images --------------------------------------------------------------------------------

    @initialize(target=images, layers=st.lists(st.sampled_from(POOL), min_size=1, max_size=3))
    def first_image(self, layers: list[LayerSpec]) -> SampleSet:
        return self.build_image(layers)

    @rule(target=images, layers=st.lists(st.sampled_from(POOL), min_size=1, max_size=3))
    def build_image(self, layers: list[LayerSpec]) -> SampleSet:
        number = len(self.samples)
        sample = SampleSet(number, tuple(layers), self.directory / f"image{number}")
        sample.directory.mkdir()
        self.samples.append(sample)
        return sample

    def _load(self, sample: SampleSet) -> None:
        if sample.number not in self.loaded:
            self.portal.call(self.engine.load, sample.source("docker-archive"))
            self.loaded.add(sample.number)

    # -- pushes --------------------------------------------------------------------------------

    @rule(
        sample=images,
        source=st.sampled_from(SOURCES),
        repository=st.sampled_from(REPOSITORIES),
        tag=st.sampled_from(TAGS),
    )
    def push(self, sample: SampleSet, source: str, repository: str, tag: str) -> None:
        target = self._target(repository, tag)
        if source == "store":
            self._load(sample)
            self.portal.call(self.engine.tag, sample.name, target)
            self._check(repository, tag, self._push(target))
        else:
            self._check(repository, tag, self._push(target, sample.source(source)))

    @rule(sample=images, repository=st.sampled_from(REPOSITORIES), tag=st.sampled_from(TAGS))
    def push_index(self, sample: SampleSet, repository: str, tag: str) -> None:
        target = self._target(repository, tag)
        self._check(repository, tag, self._push(target, sample.source("index")))

    @rule(
        samples=st.lists(images, min_size=1, max_size=3),
        repositories=st.lists(st.sampled_from(REPOSITORIES), min_size=3, max_size=3),
        tag=st.sampled_from(TAGS),
    )
    def push_batch(self, samples: list[SampleSet], repositories: list[str], tag: str) -> None:
        """One batch from the store; a target drawn twice names the last image tagged so."""
        targets = {}
        for sample, repository in zip(samples, repositories, strict=False):
            self._load(sample)
            target = self._target(repository, tag)
            self.portal.call(self.engine.tag, sample.name, target)
            targets[target] = repository
        events: list[ProgressEvent] = []
        items = self.portal.call(
            lambda: self.engine.push_many(list(targets), progress=events.append)
        )
        _no_refusal(" ".join(targets), events)
        for item in items:
            assert item.result is not None, f"{item.ref}: {item.error}"
            self._check(targets[item.ref], tag, item.result)

    def _push(self, target: str, source: Path | None = None) -> PushResult:
        events: list[ProgressEvent] = []
        try:
            return self.portal.call(
                lambda: self.engine.push(target, source=source, progress=events.append)
            )
        except HoistError as error:
            assert "\n" not in str(error), f"an error of more than one line: {error!r}"
            raise AssertionError(f"push of {target} failed: {error}") from error
        finally:
            _no_refusal(target, events)

    def _check(self, repository: str, tag: str, result: PushResult) -> None:
        path = f"{self.prefix}/{repository}"
        assert_pushed_whole(self.registry, path, tag, str(result.digest))
        self.pushed[(repository, tag)] = result
        PushModel.pushes += 1

    # -- what changes underneath ---------------------------------------------------------------

    @precondition(lambda self: bool(self.pushed))
    @rule(tag=st.sampled_from(TAGS), repository=st.sampled_from(REPOSITORIES))
    def untag(self, tag: str, repository: str) -> None:
        """``rmi`` a registry name; the image keeps its model name, so it stays in the store."""
        with contextlib.suppress(HoistError):  # no such name (never tagged, or untagged)
            self.portal.call(self.engine.remove, self._target(repository, tag))

    @precondition(lambda self: bool(self.pushed))
    @rule(what=st.sampled_from([("distribution",), ("layerdb", "compressed")]))
    def forget_push_metadata(self, what: tuple[str, ...]) -> None:
        """What Hoist remembers of earlier pushes (where each layer went, what its compressor
        made of each tar) is a hint; without it pushes still hold."""
        shutil.rmtree(self.engine.store.root.joinpath(*what), ignore_errors=True)

    @precondition(lambda self: bool(self.pushed))
    @rule(data=st.data())
    def delete_a_blob(self, data: st.DataObject) -> None:
        """Garbage collection, or a user's clean-up: a blob a manifest names leaves its
        repository (the manifest stays, now broken, as the registry allows)."""
        repository, tag = data.draw(st.sampled_from(sorted(self.pushed)))
        found = manifest(self.registry, f"{self.prefix}/{repository}", tag)
        blobs = found.blobs() if found is not None else []
        if blobs:
            digest = data.draw(st.sampled_from([blob["digest"] for blob in blobs]))
            delete_blob(self.registry, f"{self.prefix}/{repository}", digest)

    @precondition(lambda self: bool(self.pushed))
    @rule(data=st.data())
    def delete_a_manifest(self, data: st.DataObject) -> None:
        repository, tag = data.draw(st.sampled_from(sorted(self.pushed)))
        delete_manifest(self.registry, f"{self.prefix}/{repository}", tag)
        del self.pushed[(repository, tag)]

    @precondition(lambda self: bool(self.pushed))
    @rule()
    def restart_on_a_fresh_store(self) -> None:
        """Another machine, or a wiped one, pushing to the same registry."""
        self.portal.call(self.engine.aclose)
        self.engine = self._start()


def _no_refusal(what: str, events: list[ProgressEvent]) -> None:
    """Nothing here races and stale knowledge is found out before the manifest goes: a manifest
    refused (and so checked again, which would hide the error) means Hoist took a blob as
    present on evidence that did not hold."""
    refusals = [e.text for e in events if isinstance(e, Message) and MANIFEST_RECHECK in e.text]
    assert not refusals, f"{what}: {refusals}"


@pytest.fixture
def model_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path / "registry") as registry:
        yield registry


@pytest.mark.timeout(max(300, EXAMPLES))  # a long run takes its time: about 0.2 s an example
def test_every_push_names_only_blobs_its_repository_holds(
    model_registry: LocalRegistry, tmp_path: Path
) -> None:
    PushModel.registry = model_registry
    PushModel.workdir = tmp_path
    print(f"\nmodel: {EXAMPLES or CI_EXAMPLES} examples, {'random' if EXAMPLES else 'fixed'}")
    PushModel.examples = PushModel.pushes = 0
    run_state_machine_as_test(
        PushModel,
        settings=settings(
            max_examples=EXAMPLES or CI_EXAMPLES,
            stateful_step_count=15,
            derandomize=not EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            print_blob=True,
        ),
    )
    print(f"model: {PushModel.examples} examples, {PushModel.pushes} pushes checked")
    assert PushModel.pushes > 0, "the model pushed nothing: its rules need reweighing"
