"""The kit of the Hypothesis searches of bad input: how many examples they run (in CI a fixed
set, derandomized so that every run tries the same ones; with ``HOIST_FUZZ_EXAMPLES=N``, N
random ones), JSON values that look almost right, changes to a document, and the checks that a
refusal is a HoistError and a push that succeeded is whole."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from engine.errors import HoistError
from tests.support.memory_registry import MemoryRegistry

EXAMPLES = int(os.environ.get("HOIST_FUZZ_EXAMPLES", "0"))


def fuzz_settings(ci_examples: int) -> settings:
    """Settings for a search that runs ``ci_examples`` in CI (files on disk: no deadline)."""
    return settings(
        max_examples=EXAMPLES or ci_examples,
        derandomize=not EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


#: Keys the documents use, so that generated objects often look almost right.
KEYS = (
    "mediaType",
    "digest",
    "size",
    "urls",
    "annotations",
    "platform",
    "os",
    "architecture",
    "variant",
    "manifests",
    "layers",
    "config",
    "rootfs",
    "diff_ids",
    "schemaVersion",
    "imageLayoutVersion",
    "org.opencontainers.image.ref.name",
    "Config",
    "RepoTags",
    "Layers",
    "Repositories",
    "Digest",
    "SourceRepository",
    "HMAC",
)

_HEX = "0123456789abcdef"
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "linux",
            "amd64",
            "latest",
            "1.0.0",
            "sha256:",
            "sha256:../../etc/passwd",
            "../../etc/passwd",
            "/etc/passwd",
            "fuzz/app:v1",
            "UPPER/case:tag",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
        ]
    ),
    st.text(_HEX, min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    # Beyond any float and any int64: JSON numbers have no bound, and Python's json reads them.
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # NaN and ±Infinity included: Python's json reads them
    TEXT,
)
#: Scalars as often as containers: ``recursive`` alone draws mostly the latter.
VALUES = SCALARS | st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), inner, max_size=3),
    ),
    max_leaves=8,
)


@dataclass(frozen=True)
class Change:
    """Replace (or, with ``delete``, remove) one value of one document."""

    document: str
    where: int  # which of the document's paths, modulo their number
    value: Any
    delete: bool


def changes_of(documents: tuple[str, ...]) -> st.SearchStrategy[list[Change]]:
    change = st.builds(
        Change, st.sampled_from(documents), st.integers(0, 1000), VALUES, st.booleans()
    )
    return st.lists(change, min_size=1, max_size=3)


JsonPath = tuple[str | int, ...]


def json_paths(value: Any, prefix: JsonPath = ()) -> Iterator[JsonPath]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*prefix, index))


def apply_change(document: Any, change: Change) -> Any:
    paths = list(json_paths(document))
    path = paths[change.where % len(paths)]
    if not path:
        return change.value
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if change.delete and isinstance(parent, dict):
        del parent[last]
    else:
        parent[last] = change.value
    return document


@contextlib.contextmanager
def refused(what: str = "push") -> Iterator[None]:
    """A HoistError inside is a refusal, and fine (a Hypothesis event says which); anything
    else propagates and fails the test."""
    try:
        yield
    except HoistError as refusal:
        event(f"{what}: {type(refusal).__name__}")
    else:
        event(f"{what}: done")


def check_committed(registry: MemoryRegistry, tag: str) -> None:
    """A manifest the registry holds names only blobs it holds (children of an index too)."""
    raw = registry.manifests.get(tag)
    if raw is None:
        return
    document = json.loads(raw)
    for child in document.get("manifests", []):
        assert child["digest"] in registry.manifests
        check_blobs(registry, json.loads(registry.manifests[child["digest"]]))
    check_blobs(registry, document)


def check_blobs(registry: MemoryRegistry, manifest: dict[str, Any]) -> None:
    for blob in [manifest.get("config"), *manifest.get("layers", [])]:
        if isinstance(blob, dict):
            assert blob["digest"] in registry.blobs
