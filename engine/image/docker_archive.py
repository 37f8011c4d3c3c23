"""Images in a ``docker save`` archive, read in place.

``manifest.json`` lists the images: ``{"Config", "RepoTags", "Layers"}``, each a path inside the
archive. The config is ``<hex>.json`` (before Docker 25) or ``blobs/sha256/<hex>`` (since); either
way its name carries its sha256, which is checked. Layers are uncompressed tars, so each becomes a
layer with the config's diff ID and no descriptor: the pusher compresses it. A layer that is already
gzip (``docker load`` accepts those) is given a gzip descriptor instead and pushed as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import ImageSourceError
from engine.image.base import FileLayer, SourceImage
from engine.image.blobs import Blobs, diff_ids_of, hash_location, read_head
from engine.image.tarsafe import GZIP_MAGIC
from engine.media_types import DOCKER_CONFIG, DOCKER_LAYER_GZIP

MANIFEST_FILE = "manifest.json"

_BLOB_PATH = re.compile(r"(?:.*/)?blobs/([a-z0-9]+)/([a-f0-9]+)")
_LEGACY_CONFIG = re.compile(r"(?:.*/)?([a-f0-9]{64})\.json")


@dataclass(frozen=True)
class ManifestEntry:
    """One image of ``manifest.json``."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Any, what: str) -> ManifestEntry:
        if not isinstance(data, dict) or not isinstance(data.get("Config"), str):
            raise ImageSourceError(f"{what}: an entry without a Config path")
        return cls(
            config=data["Config"],
            repo_tags=_strings(data.get("RepoTags"), f"{what}: RepoTags"),
            layers=_strings(data.get("Layers"), f"{what}: Layers"),
        )


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageSourceError(f"{what} is not a list of strings")
    return tuple(value)


def config_digest(name: str) -> Digest | None:
    """The digest a config's file name carries, if it carries one."""
    blob = _BLOB_PATH.fullmatch(name)
    if blob:
        return Digest.parse(f"{blob[1]}:{blob[2]}")
    legacy = _LEGACY_CONFIG.fullmatch(name)
    return Digest.parse(f"sha256:{legacy[1]}") if legacy else None


async def read_docker_archive(blobs: Blobs, origin: str) -> list[SourceImage]:
    """Every image that ``manifest.json`` lists; ``origin`` is e.g. ``docker-archive:x.tar``."""
    what = f"{blobs.label}: {MANIFEST_FILE}"
    data = await blobs.read_json(MANIFEST_FILE)
    if not isinstance(data, list):
        raise ImageSourceError(f"{what}: expected a list of images")
    entries = [ManifestEntry.from_json(item, f"{what}[{i}]") for i, item in enumerate(data)]
    return [await _read_image(blobs, entry, origin) for entry in entries]


async def _read_config(blobs: Blobs, name: str) -> bytes:
    digest = config_digest(name)
    if digest is None:
        return await blobs.read(name)
    return await blobs.read_verified(name, digest)


async def _read_image(blobs: Blobs, entry: ManifestEntry, origin: str) -> SourceImage:
    config = await _read_config(blobs, entry.config)
    diff_ids = diff_ids_of(config, f"{blobs.label}: {entry.config}")
    if diff_ids is None:
        raise ImageSourceError(f"{blobs.label}: {entry.config}: no rootfs.diff_ids list")
    if len(diff_ids) != len(entry.layers):
        raise ImageSourceError(
            f"{blobs.label}: image {entry.config} lists {len(entry.layers)} layers "
            f"but its config has {len(diff_ids)} diff_ids"
        )
    layers = [
        await _read_layer(blobs, name, diff_id)
        for name, diff_id in zip(entry.layers, diff_ids, strict=True)
    ]
    return SourceImage(
        config=config,
        layers=layers,
        config_media_type=DOCKER_CONFIG,
        origin=f"{origin}:{entry.repo_tags[0]}" if entry.repo_tags else origin,
        names=entry.repo_tags,
    )


async def _read_layer(blobs: Blobs, name: str, diff_id: Digest) -> FileLayer:
    location = await blobs.require(name)
    if await read_head(location, len(GZIP_MAGIC)) != GZIP_MAGIC:
        return location.layer(diff_id=diff_id)
    digest = await hash_location(location)
    descriptor = Descriptor(media_type=DOCKER_LAYER_GZIP, digest=digest, size=location.size)
    return location.layer(diff_id=diff_id, descriptor=descriptor)
