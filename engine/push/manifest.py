"""The manifest to PUT: a source's own bytes, or one built from the upload — Docker schema 2, or
an OCI image manifest when the layers are zstd, which schema 2 has no media type for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from engine import media_types
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import PushError, RegistryResponseError, UsageError
from engine.image.base import Image, SourceIndex
from engine.push.compression import Compression

#: Registries refuse larger manifests (Distribution's default limit).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024

#: Docker's media types and their OCI names, for a manifest built as OCI.
_OCI_NAMES = {
    media_types.DOCKER_CONFIG: media_types.OCI_CONFIG,
    media_types.DOCKER_LAYER: media_types.OCI_LAYER,
    media_types.DOCKER_LAYER_GZIP: media_types.OCI_LAYER_GZIP,
}


def build(
    config: bytes, config_media_type: str, layers: Sequence[Descriptor], compression: Compression
) -> tuple[str, bytes]:
    """(media type, bytes) of the manifest for a push with ``compression``."""
    if not compression.oci_only:
        return media_types.DOCKER_MANIFEST, schema2(config, config_media_type, layers)
    return media_types.OCI_MANIFEST, oci(config, config_media_type, layers)


def schema2(config: bytes, config_media_type: str, layers: Sequence[Descriptor]) -> bytes:
    """Docker's schema 2 manifest, laid out as Docker marshals it (3-space indent)."""
    return _manifest(media_types.DOCKER_MANIFEST, config, config_media_type, layers, indent=3)


def oci(config: bytes, config_media_type: str, layers: Sequence[Descriptor]) -> bytes:
    """An OCI image manifest, Docker's media types given their OCI names (a blob found as a
    Docker gzip layer is the same bytes as an OCI one); laid out as containerd marshals it."""
    named = [replace(layer, media_type=_oci_name(layer.media_type)) for layer in layers]
    return _manifest(
        media_types.OCI_MANIFEST, config, _oci_name(config_media_type), named, indent=2
    )


def _oci_name(media_type: str) -> str:
    return _OCI_NAMES.get(media_type, media_type)


def _manifest(
    media_type: str,
    config: bytes,
    config_media_type: str,
    layers: Sequence[Descriptor],
    *,
    indent: int,
) -> bytes:
    config_descriptor = Descriptor(config_media_type, Digest.of(config), len(config))
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config_descriptor.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(document, indent=indent).encode()


def check_compression(image: Image, compression: Compression) -> None:
    """Refuse, before anything is sent, a push whose manifest must stay Docker schema 2 while
    ``compression`` needs OCI: a source's own schema 2 manifest (pushed byte for byte), or a
    Docker foreign layer (OCI has no media type for it that is not deprecated)."""
    if not compression.oci_only:
        return
    if image.manifest is not None:
        if image.manifest[0] == media_types.DOCKER_MANIFEST:
            raise _refusal("the source's own manifest is Docker schema 2, pushed as it is")
        return
    foreign = media_types.DOCKER_FOREIGN_LAYER_GZIP
    if any(layer.descriptor and layer.descriptor.media_type == foreign for layer in image.layers):
        raise _refusal("the image has a Docker foreign layer")


def check_index_compression(index: SourceIndex, compression: Compression) -> None:
    """``check_compression`` for a multi-platform index and each of its children."""
    if compression.oci_only and index.media_type == media_types.DOCKER_MANIFEST_LIST:
        raise _refusal("the source's own manifest is a Docker manifest list, pushed as it is")
    for _, image in index.children:
        check_compression(image, compression)


def _refusal(why: str) -> UsageError:
    return UsageError(
        f"zstd layers need an OCI image manifest, and {why}: push it with gzip compression"
    )


def check_size(manifest: bytes) -> None:
    if len(manifest) > MAX_MANIFEST_SIZE:
        raise PushError(
            f"manifest is {len(manifest)} bytes, over the {MAX_MANIFEST_SIZE}-byte limit"
        )


#: What a registry answers a manifest naming a blob it cannot find in the repository. Distribution
#: also says ``DIGEST_INVALID`` when it reads a blob's link while another client writes it.
_UNKNOWN_BLOB_CODES = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID"})


def names_unknown_blob(refusal: RegistryResponseError) -> bool:
    """Whether the registry refused a manifest for a blob it names: worth checking them again."""
    return not _UNKNOWN_BLOB_CODES.isdisjoint(refusal.codes)


def refused(refusal: RegistryResponseError) -> RegistryResponseError:
    """The refusal, saying that it was the manifest that the registry refused."""
    return refusal.reworded(f"manifest refused: {refusal}")
