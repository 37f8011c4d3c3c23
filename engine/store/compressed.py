"""What Hoist's own deterministic compressor made of a layer: its digest and size.

A cache like the push metadata: written atomically but not fsynced.

Apart from the distribution metadata (where a blob was pushed), this is a fact about the layer
and the compressor alone. Knowing it, a push can ask a registry whether it already has the blob
without compressing anything — even after the push metadata is lost.
"""

from __future__ import annotations

from engine.digest import Digest
from engine.errors import StoreError
from engine.image.base import Descriptor
from engine.store.atomic import read_json, write_json
from engine.store.layout import Layout


def read_compressed_form(layout: Layout, diff_id: Digest, compressor: str) -> Descriptor | None:
    path = layout.compressed_form(diff_id, compressor)
    document = read_json(path)
    if document is None:
        return None
    try:
        return Descriptor.from_json(document)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path}: not a descriptor: {exc}") from exc


def write_compressed_form(
    layout: Layout, diff_id: Digest, compressor: str, descriptor: Descriptor
) -> None:
    path = layout.compressed_form(diff_id, compressor)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, descriptor.to_json(), durable=False)
