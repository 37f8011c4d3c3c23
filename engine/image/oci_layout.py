"""Images in an OCI image layout: a directory, or a tar of one (an OCI archive).

``oci-layout`` marks the layout; ``index.json`` lists its manifests. Each manifest is pushed byte
for byte, so the manifest and the config are read whole and checked against their digests; the
layers stay where they are, as blobs with the descriptors the manifest gives them. Names come from
the ``org.opencontainers.image.ref.name`` annotation.

An entry may be a multi-platform index (OCI index or Docker manifest list): it is read with every
child it lists, in order. A child whose blobs the layout lacks is kept as missing rather than
refused (``skopeo copy`` of one platform leaves the others out); using it is the error. A child that
is itself an index is refused: nested indexes are not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from engine.concurrency import gather
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import ImageSourceError
from engine.image.base import FileLayer, IndexChild, SourceImage, SourceIndex
from engine.image.blobs import Blobs, blob_name, diff_ids_of, parse_json
from engine.image.index import Platform
from engine.media_types import INDEXES, MANIFESTS

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class _Manifest:
    """A manifest or index as read: its media type, its bytes and their JSON."""

    media_type: str
    raw: bytes
    data: dict[str, Any]


def descriptor_of(data: Any, what: str) -> Descriptor:
    """A descriptor from its JSON form, naming ``what`` when it is malformed."""
    if not isinstance(data, dict):
        raise ImageSourceError(f"{what}: not a descriptor object")
    try:
        return Descriptor.from_json(data)
    except KeyError as e:
        raise ImageSourceError(f"{what}: malformed descriptor: no {e.args[0]}") from e
    except (ValueError, ImageSourceError) as e:  # the latter an invalid digest
        raise ImageSourceError(f"{what}: malformed descriptor: {e}") from e


def descriptors_of(data: Any, what: str) -> list[Descriptor]:
    """The descriptors of a JSON list, each named by its position when malformed."""
    if not isinstance(data, list):
        raise ImageSourceError(f"{what}: not a list")
    return [descriptor_of(item, f"{what}[{i}]") for i, item in enumerate(data)]


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
    return descriptors_of(manifests, f"{what}: manifests")


async def read_oci_layout(blobs: Blobs, origin: str) -> list[SourceImage | SourceIndex]:
    """Every image and index the layout's index lists; ``origin`` is e.g. ``oci:dir``."""
    await check_layout(blobs)
    return [await _read_entry(blobs, d, origin) for d in await read_index(blobs)]


async def _read_entry(
    blobs: Blobs, descriptor: Descriptor, origin: str
) -> SourceImage | SourceIndex:
    what = f"{blobs.label}: manifest {descriptor.digest}"
    manifest = await _read_manifest(blobs, descriptor, what)
    names = _ref_names(descriptor)
    named = f"{origin}:{names[0]}" if names else f"{origin}@{descriptor.digest}"
    if manifest.media_type in INDEXES:
        what = f"{blobs.label}: index {descriptor.digest}"
        return await _read_source_index(blobs, manifest, named, names, what)
    return await _read_image(blobs, manifest, named, names, what)


def _check_size(descriptor: Descriptor, actual: int, what: str) -> None:
    if descriptor.size != actual:
        raise ImageSourceError(
            f"{what}: the descriptor says {descriptor.size} bytes, the blob has {actual}"
        )


async def _read_small(blobs: Blobs, descriptor: Descriptor, what: str) -> bytes:
    data = await blobs.read_small(descriptor.digest)
    _check_size(descriptor, len(data), what)
    return data


async def _read_manifest(blobs: Blobs, descriptor: Descriptor, what: str) -> _Manifest:
    raw = await _read_small(blobs, descriptor, what)
    data = parse_json(raw, what)
    if not isinstance(data, dict):
        raise ImageSourceError(f"{what}: not a JSON object")
    return _Manifest(_media_type_of(descriptor, data, what), raw, data)


def _media_type_of(descriptor: Descriptor, data: dict[str, Any], what: str) -> str:
    # The registry files the manifest under the type it is PUT with; a body that says otherwise
    # would be refused there, so it is refused here, before anything is uploaded.
    declared = data.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ImageSourceError(f"{what}: mediaType is not a string")
    if descriptor.media_type and declared and declared != descriptor.media_type:
        raise ImageSourceError(
            f"{what}: the descriptor says media type {descriptor.media_type!r}, "
            f"the manifest says {declared!r}"
        )
    media_type = descriptor.media_type or declared or ""
    if media_type not in MANIFESTS | INDEXES:
        raise ImageSourceError(f"{what}: unsupported media type {media_type!r}")
    return media_type


def _parts(manifest: _Manifest, what: str) -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of an image manifest."""
    config = descriptor_of(manifest.data.get("config"), f"{what}: config")
    layers = manifest.data.get("layers")
    if not isinstance(layers, list):
        raise ImageSourceError(f"{what}: no layers list")
    return config, descriptors_of(layers, f"{what}: layers")


async def _read_image(
    blobs: Blobs, manifest: _Manifest, origin: str, names: tuple[str, ...], what: str
) -> SourceImage:
    config_descriptor, layer_descriptors = _parts(manifest, what)
    config = await _read_small(blobs, config_descriptor, f"{what}: config")
    diff_ids = diff_ids_of(config, f"{blobs.label}: config {config_descriptor.digest}")
    return SourceImage(
        config=config,
        layers=await _read_layers(blobs, layer_descriptors, diff_ids, what),
        config_media_type=config_descriptor.media_type,
        manifest=(manifest.media_type, manifest.raw),
        origin=origin,
        names=names,
    )


def _ref_names(descriptor: Descriptor) -> tuple[str, ...]:
    name = (descriptor.annotations or {}).get(REF_NAME_ANNOTATION)
    return (name,) if isinstance(name, str) and name else ()


async def _read_layers(
    blobs: Blobs, descriptors: list[Descriptor], diff_ids: list[Digest] | None, what: str
) -> list[FileLayer]:
    # Non-layer configs (artifacts) may not list diff IDs; then the pusher simply has none.
    known: Sequence[Digest | None] = diff_ids or []
    if len(known) != len(descriptors):
        known = [None] * len(descriptors)
    # Located at once: each is a worker thread's stat, and a push waits for them all.
    return await gather(
        [
            partial(_read_layer, blobs, d, diff_id, what)
            for d, diff_id in zip(descriptors, known, strict=True)
        ]
    )


async def _read_layer(
    blobs: Blobs, descriptor: Descriptor, diff_id: Digest | None, what: str
) -> FileLayer:
    location = await blobs.blob(descriptor.digest)
    _check_size(descriptor, location.size, f"{what}: layer {descriptor.digest}")
    return location.layer(diff_id=diff_id, descriptor=descriptor)


# --- multi-platform indexes -----------------------------------------------------------------


async def _read_source_index(
    blobs: Blobs, index: _Manifest, origin: str, names: tuple[str, ...], what: str
) -> SourceIndex:
    descriptors = descriptors_of(index.data.get("manifests"), f"{what}: manifests")
    children = [
        await _read_child(blobs, descriptor, f"{what}: manifests[{i}]", origin)
        for i, descriptor in enumerate(descriptors)
    ]
    return SourceIndex(
        media_type=index.media_type,
        raw=index.raw,
        manifests=children,
        origin=origin,
        names=names,
    )


def _refuse_nested(media_type: str, what: str) -> None:
    if media_type in INDEXES:
        raise ImageSourceError(f"{what} is itself an index; nested indexes are not supported")


async def _read_child(
    blobs: Blobs, descriptor: Descriptor, position: str, origin: str
) -> IndexChild:
    _refuse_nested(descriptor.media_type, position)
    if not await _has_blob(blobs, descriptor.digest):
        return _missing_child(blobs, descriptor, descriptor.digest)
    what = f"{blobs.label}: manifest {descriptor.digest}"
    manifest = await _read_manifest(blobs, descriptor, what)
    _refuse_nested(manifest.media_type, position)
    config, layers = _parts(manifest, what)
    for part in (config, *layers):
        if not await _has_blob(blobs, part.digest):
            return _missing_child(blobs, descriptor, part.digest)
    image = await _read_image(blobs, manifest, f"{origin}@{descriptor.digest}", (), what)
    return IndexChild(descriptor=descriptor, image=image)


async def _has_blob(blobs: Blobs, digest: Digest) -> bool:
    return await blobs.locate(blob_name(digest)) is not None


def _missing_child(blobs: Blobs, descriptor: Descriptor, digest: Digest) -> IndexChild:
    platform = Platform.of(descriptor.platform)
    child = f"for {platform}" if platform else "of a child without a platform"
    whose = "the manifest" if digest == descriptor.digest else f"from manifest {descriptor.digest}"
    message = f"{blobs.label}: blob {digest} is missing ({whose} {child})"
    return IndexChild(descriptor=descriptor, missing=message)
