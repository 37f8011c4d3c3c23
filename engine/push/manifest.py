"""The manifest to PUT: an OCI source's own bytes, or a Docker schema 2 built from the upload."""

from __future__ import annotations

import json
from collections.abc import Sequence

from engine import media_types
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import PushError, RegistryResponseError

#: Registries refuse larger manifests (Distribution's default limit).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024


def schema2(config: bytes, config_media_type: str, layers: Sequence[Descriptor]) -> bytes:
    """Docker's schema 2 manifest, laid out as Docker marshals it (3-space indent)."""
    config_descriptor = Descriptor(config_media_type, Digest.of(config), len(config))
    document = {
        "schemaVersion": 2,
        "mediaType": media_types.DOCKER_MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(document, indent=3).encode()


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
