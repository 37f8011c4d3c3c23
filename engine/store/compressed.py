"""What Hoist's own deterministic compressor made of each layer: its digest and size.

Apart from the distribution metadata (where a blob was pushed), this is a fact about the layer
and the compressor alone. Knowing it, a push can ask a registry whether it already has the blob
without compressing anything — even after the push metadata is lost.

One JSON object per compressor maps diff IDs to descriptors. A cache like the push metadata:
replaced atomically but not fsynced, and a damaged one is no record (of any layer, then: the
next push compresses again and writes it anew). One file replaced per batch of pushes, not one
file created per layer: on ext4, creating a file costs more than everything else a push writes.
Entries outlive ``rmi``: the map grows by one line per layer ever pushed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import HoistError, StoreError
from engine.store.atomic import read_json, write_json

#: diff ID → what the compressor made of that layer
Forms = dict[Digest, Descriptor]


def read_forms(path: Path) -> Forms:
    """Every recorded form; none when there is no file. A damaged file is a StoreError."""
    document = read_json(path)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise StoreError(f"{path}: not a JSON object")
    try:
        return {Digest.parse(key): _descriptor(value) for key, value in document.items()}
    except (HoistError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path}: not a map of descriptors: {exc}") from exc


def _descriptor(value: Any) -> Descriptor:
    if not isinstance(value, dict):
        raise ValueError(f"not a descriptor: {value!r}")
    return Descriptor.from_json(value)


def add_forms(path: Path, known: Forms, forms: Mapping[Digest, Descriptor]) -> None:
    """Write ``known`` (what the file holds now) with ``forms`` added, unless nothing is new.

    The caller holds the store's lock, so no other writer comes between read and write."""
    merged = {**known, **forms}
    if merged != known:
        write_json(path, {str(k): v.to_json() for k, v in merged.items()}, durable=False)
