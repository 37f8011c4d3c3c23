"""The layer database: one directory per chain ID holding the uncompressed tar and its facts.

A chain ID names a layer together with everything below it, so two images share a directory
exactly when they share that layer and all its parents. Directories are built under a temp name
and renamed into place whole; functions here are blocking (the ``Store`` runs them in threads).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.digest import Digest
from engine.errors import HoistError, StoreError
from engine.store.atomic import (
    fsync_dir,
    read_file,
    remove_dir,
    rename_into_place,
    write_durable,
)
from engine.store.layout import Layout

LAYER_TAR = "layer.tar"


def chain_ids(diff_ids: Sequence[Digest]) -> list[Digest]:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[Digest] = []
    for diff_id in diff_ids:
        if not out:
            out.append(Digest(diff_id))
        else:
            out.append(Digest.of(f"{out[-1]} {diff_id}".encode()))
    return out


@dataclass(frozen=True)
class StoredLayer:
    """A layer as the layer database records it."""

    chain_id: Digest
    diff_id: Digest
    size: int
    parent: Digest | None
    tar: Path


def has_layer(layout: Layout, chain_id: Digest) -> bool:
    # A layer directory only ever appears complete (renamed into place), so existence suffices.
    return layout.layer_dir(chain_id).is_dir()


def read_layer(layout: Layout, chain_id: Digest) -> StoredLayer:
    """The recorded facts of a layer; missing or corrupt files are a StoreError naming them."""
    directory = layout.layer_dir(chain_id)
    if not directory.is_dir():
        raise StoreError(f"{directory}: layer {chain_id} is missing")
    size_text = _read_text(directory / "size")
    if size_text is None or not re.fullmatch(r"[0-9]+", size_text):
        raise StoreError(f"{directory / 'size'}: missing or not a size: {size_text!r}")
    diff_id = _read_digest(directory / "diff")
    if diff_id is None:
        raise StoreError(f"{directory / 'diff'}: missing")
    parent = _read_digest(directory / "parent")
    return StoredLayer(chain_id, diff_id, int(size_text), parent, directory / LAYER_TAR)


def _read_text(path: Path) -> str | None:
    data = read_file(path)
    if data is None:
        return None
    try:
        return data.decode().strip()
    except UnicodeDecodeError as e:
        raise StoreError(f"{path}: not text") from e


def _read_digest(path: Path) -> Digest | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return Digest.parse(text)
    except HoistError as e:
        raise StoreError(f"{path}: {e}") from e


def check_layer(layout: Layout, chain_id: Digest) -> StoredLayer:
    """``read_layer``, also checking that ``layer.tar`` is there with the recorded size."""
    layer = read_layer(layout, chain_id)
    try:
        actual = layer.tar.stat().st_size
    except OSError as e:
        raise StoreError(f"{layer.tar}: {e.strerror or e}") from e
    if actual != layer.size:
        raise StoreError(f"{layer.tar}: {actual} bytes, expected {layer.size}")
    return layer


@dataclass(frozen=True)
class StagedLayer:
    """A verified ``layer.tar`` in a temp directory of the layer database, not yet committed."""

    directory: Path
    diff_id: Digest
    size: int


def commit_layer(
    layout: Layout, staged: StagedLayer, chain_id: Digest, parent: Digest | None
) -> bool:
    """Record a staged layer as ``chain_id``: write its facts, rename its directory into place.

    Returns False when another writer committed the same chain ID first; the staged directory is
    then discarded and theirs is kept.
    """
    facts = {"diff": str(staged.diff_id), "size": str(staged.size)}
    if parent is not None:
        facts["parent"] = str(parent)
    try:
        for name, text in facts.items():
            write_durable(staged.directory / name, text.encode())
        fsync_dir(staged.directory)
        return rename_into_place(staged.directory, layout.layer_dir(chain_id))
    except OSError as e:
        raise StoreError(f"{staged.directory}: cannot commit layer: {e.strerror or e}") from e
    finally:
        # Committed, it is no longer there; otherwise it must not linger.
        shutil.rmtree(staged.directory, ignore_errors=True)


def delete_layer(layout: Layout, chain_id: Digest) -> None:
    remove_dir(layout.layer_dir(chain_id))
