"""Images in an OCI image layout: a directory, or a tar of one (an OCI archive).

``oci-layout`` marks the layout; ``index.json`` lists its manifests. Each manifest is pushed byte
for byte, so the manifest and the config are read whole and checked against their digests; the
layers stay where they are, as blobs with the descriptors the manifest gives them. Names come from
the ``org.opencontainers.image.ref.name`` annotation.
"""

from __future__ import annotations

from typing import Any

from engine.digest import Digest
from engine.errors import ImageSourceError
from engine.image.base import Descriptor, FileLayer, SourceImage
from engine.image.blobs import Blobs, diff_ids_of, parse_json
from engine.image.media_types import INDEXES, MANIFESTS

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


def descriptor_of(data: Any, what: str) -> Descriptor:
    """A descriptor from its JSON form, naming ``what`` when it is malformed."""
    if not isinstance(data, dict):
        raise ImageSourceError(f"{what}: not a descriptor object")
    try:
        return Descriptor.from_json(data)
    except (KeyError, TypeError, ValueError) as e:
        raise ImageSourceError(f"{what}: malformed descriptor ({e!r})") from e


async def check_layout(blobs: Blobs) -> None:
    """Refuse a directory or tar whose ``oci-layout`` file is missing or says nothing."""
    data = await blobs.read_json(LAYOUT_FILE)
    version = data.get("imageLayoutVersion") if isinstance(data, dict) else None
    if not isinstance(version, str):
        raise ImageSourceError(f"{blobs.label}: {LAYOUT_FILE} has no imageLayoutVersion")


async def read_index(blobs: Blobs) -> list[Descriptor]:
    """The manifest descriptors that ``index.json`` lists."""
    what = f"{blobs.label}: {INDEX_FILE}"
    data = await blobs.read_json(INDEX_FILE)
    manifests = data.get("manifests") if isinstance(data, dict) else None
    if not isinstance(manifests, list):
        raise ImageSourceError(f"{what}: no manifests list")
    return [descriptor_of(item, f"{what}: manifests[{i}]") for i, item in enumerate(manifests)]


async def read_oci_layout(blobs: Blobs, origin: str) -> list[SourceImage]:
    """Every image the layout's index lists; ``origin`` is e.g. ``oci:dir`` or ``oci-archive:x``."""
    await check_layout(blobs)
    return [await _read_image(blobs, d, origin) for d in await read_index(blobs)]


def _refuse_index(media_type: str, what: str) -> None:
    if media_type in INDEXES:
        raise ImageSourceError(f"{what} is a multi-platform index; not supported yet")


def _check_size(descriptor: Descriptor, actual: int, what: str) -> None:
    if descriptor.size != actual:
        raise ImageSourceError(
            f"{what}: the descriptor says {descriptor.size} bytes, the blob has {actual}"
        )


async def _read_small(blobs: Blobs, descriptor: Descriptor, what: str) -> bytes:
    data = await blobs.read_small(descriptor.digest)
    _check_size(descriptor, len(data), what)
    return data


async def _read_image(blobs: Blobs, descriptor: Descriptor, origin: str) -> SourceImage:
    what = f"{blobs.label}: manifest {descriptor.digest}"
    _refuse_index(descriptor.media_type, what)
    raw = await _read_small(blobs, descriptor, what)
    manifest = parse_json(raw, what)
    if not isinstance(manifest, dict):
        raise ImageSourceError(f"{what}: not a JSON object")
    media_type = descriptor.media_type or str(manifest.get("mediaType", ""))
    _refuse_index(str(manifest.get("mediaType", "")), what)
    if media_type not in MANIFESTS:
        raise ImageSourceError(f"{what}: unsupported media type {media_type!r}")
    config_descriptor = descriptor_of(manifest.get("config"), f"{what}: config")
    config = await _read_small(blobs, config_descriptor, f"{what}: config")
    diff_ids = diff_ids_of(config, f"{blobs.label}: config {config_descriptor.digest}")
    names = _ref_names(descriptor)
    return SourceImage(
        config=config,
        layers=await _read_layers(blobs, manifest.get("layers"), diff_ids, what),
        config_media_type=config_descriptor.media_type,
        manifest=(media_type, raw),
        origin=f"{origin}:{names[0]}" if names else f"{origin}@{descriptor.digest}",
        names=names,
    )


def _ref_names(descriptor: Descriptor) -> tuple[str, ...]:
    name = (descriptor.annotations or {}).get(REF_NAME_ANNOTATION)
    return (name,) if isinstance(name, str) and name else ()


async def _read_layers(
    blobs: Blobs, layers: Any, diff_ids: list[Digest] | None, what: str
) -> list[FileLayer]:
    if not isinstance(layers, list):
        raise ImageSourceError(f"{what}: no layers list")
    descriptors = [descriptor_of(d, f"{what}: layers[{i}]") for i, d in enumerate(layers)]
    # Non-layer configs (artifacts) may not list diff IDs; then the pusher simply has none.
    if diff_ids is None or len(diff_ids) != len(descriptors):
        return [await _read_layer(blobs, d, None, what) for d in descriptors]
    return [
        await _read_layer(blobs, d, diff_id, what)
        for d, diff_id in zip(descriptors, diff_ids, strict=True)
    ]


async def _read_layer(
    blobs: Blobs, descriptor: Descriptor, diff_id: Digest | None, what: str
) -> FileLayer:
    location = await blobs.blob(descriptor.digest)
    _check_size(descriptor, location.size, f"{what}: layer {descriptor.digest}")
    return location.layer(diff_id=diff_id, descriptor=descriptor)
