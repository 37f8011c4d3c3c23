"""The image database: configs stored byte for byte under their sha256, the image ID.

Also what the store needs to read from a config: ``rootfs.diff_ids`` and ``created``. Functions
here are blocking; the ``Store`` calls them from worker threads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from engine.digest import Digest
from engine.errors import HoistError, ImageNotFoundError, ImageSourceError, StoreError
from engine.store.atomic import read_file, write_file
from engine.store.layout import Layout

_HEX_ID = re.compile(r"[0-9a-f]{64}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config the store uses."""

    diff_ids: tuple[Digest, ...]
    created: str | None


def parse_config(data: bytes) -> ImageConfig:
    """Read ``rootfs.diff_ids`` and ``created``; ValueError says what is wrong."""
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"corrupt JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError("not a JSON object")
    created = config.get("created")
    return ImageConfig(_diff_ids(config), created if isinstance(created, str) else None)


def _diff_ids(config: dict[str, Any]) -> tuple[Digest, ...]:
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ValueError("no rootfs.diff_ids")
    try:
        return tuple(Digest.parse(str(d)) for d in rootfs["diff_ids"])
    except HoistError as e:
        raise ValueError(f"rootfs.diff_ids: {e}") from e


def source_config(data: bytes) -> ImageConfig:
    """Parse a config handed in by an image source."""
    try:
        return parse_config(data)
    except ValueError as e:
        raise ImageSourceError(f"image config: {e}") from e


def read_config(layout: Layout, image_id: Digest) -> bytes:
    path = layout.image_config(image_id)
    data = read_file(path)
    if data is None:
        raise ImageNotFoundError(f"No such image: {image_id}")
    return data


def load_config(layout: Layout, image_id: Digest) -> ImageConfig:
    """The parsed config of a stored image; a corrupt one is a StoreError naming its file."""
    return config_of(layout, image_id, read_config(layout, image_id))


def config_of(layout: Layout, image_id: Digest, data: bytes) -> ImageConfig:
    """``load_config`` of the bytes already read from the image's config file."""
    try:
        return parse_config(data)
    except ValueError as e:
        raise StoreError(f"{layout.image_config(image_id)}: {e}") from e


def write_config(layout: Layout, config: bytes) -> Digest:
    image_id = Digest.of(config)
    write_file(layout.image_config(image_id), config)
    return image_id


def has_image(layout: Layout, image_id: Digest) -> bool:
    return layout.image_config(image_id).is_file()


def delete_config(layout: Layout, image_id: Digest) -> None:
    layout.image_config(image_id).unlink(missing_ok=True)


def image_ids(layout: Layout) -> list[Digest]:
    """Every stored image ID; temp files of interrupted writes do not look like IDs."""
    try:
        names = [p.name for p in layout.imagedb.iterdir()]
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreError(f"{layout.imagedb}: cannot list: {e.strerror or e}") from e
    return sorted(Digest("sha256:" + n) for n in names if _HEX_ID.fullmatch(n))


def search(layout: Layout, prefix: str) -> Digest | None:
    """The one image whose ID starts with ``prefix`` (hex, ``sha256:`` optional), as Docker's
    digest set finds it; None when none or several match."""
    if not is_id_prefix(prefix):
        return None
    hex_prefix = prefix.removeprefix("sha256:")
    matches = [i for i in image_ids(layout) if i.hex.startswith(hex_prefix)]
    return matches[0] if len(matches) == 1 else None


def is_id_prefix(text: str) -> bool:
    """Whether ``text`` has the form of an image ID or a prefix of one."""
    return bool(_HEX_PREFIX.fullmatch(text.removeprefix("sha256:")))
