"""Where the files and blobs of an image archive live: a directory or an indexed tar.

Both answer the same questions: where are the bytes of ``name`` (a path, an offset, a size), and
what does a small file or blob hold. Blobs live at ``blobs/<algorithm>/<hex>`` in both the OCI
layout and Docker ≥ 25 archives; small reads of a named blob are checked against its digest, and
the JSON documents among them (manifests, configs) decode with errors that name the file.
Every read and hash runs in a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import DigestMismatchError, ImageSourceError
from engine.image.base import CHUNK_SIZE, FileLayer
from engine.image.tarsafe import TarIndex, normalize_name, worker_checkpoint

#: Manifests and configs larger than this are refused (as registries refuse them).
SMALL_BLOB_LIMIT = 4 << 20
#: The digest algorithms the OCI image spec registers.
_ALGORITHMS = frozenset({"sha256", "sha384", "sha512"})


@dataclass(frozen=True)
class BlobLocation:
    """Where a file's bytes lie: ``size`` bytes at ``offset`` in ``path``."""

    path: Path
    offset: int
    size: int

    def layer(
        self, *, diff_id: Digest | None = None, descriptor: Descriptor | None = None
    ) -> FileLayer:
        return FileLayer(
            path=self.path,
            size=self.size,
            offset=self.offset,
            diff_id=diff_id,
            descriptor=descriptor,
        )


def blob_name(digest: Digest) -> str:
    """The path of a blob inside an OCI layout."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


def parse_json(raw: bytes, what: str) -> Any:
    """Decode JSON, naming ``what`` (the file) when it is malformed."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ImageSourceError(f"{what}: malformed JSON ({e})") from e


def diff_ids_of(config: bytes, what: str) -> list[Digest] | None:
    """``rootfs.diff_ids`` of an image config, or None when it has no such list."""
    data = parse_json(config, what)
    rootfs = data.get("rootfs") if isinstance(data, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        return None
    try:
        return [Digest.parse(d) for d in diff_ids]
    except ImageSourceError as e:
        raise ImageSourceError(f"{what}: rootfs.diff_ids: {e}") from e


def _new_hasher(digest: Digest, what: str) -> hashlib._Hash:
    if digest.algorithm not in _ALGORITHMS:
        raise ImageSourceError(f"{what}: unsupported digest algorithm {digest.algorithm!r}")
    return hashlib.new(digest.algorithm)


def _read_range(location: BlobLocation, size: int) -> bytes:
    with location.path.open("rb") as f:
        f.seek(location.offset)
        data = f.read(size)
    if len(data) != size:
        raise ImageSourceError(f"{location.path}: ended {size - len(data)} bytes early")
    return data


def _hash_range(location: BlobLocation, algorithm: str) -> Digest:
    hasher = hashlib.new(algorithm)
    remaining = location.size
    with location.path.open("rb") as f:
        f.seek(location.offset)
        while remaining > 0:
            chunk = f.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise ImageSourceError(f"{location.path}: ended {remaining} bytes early")
            hasher.update(chunk)
            remaining -= len(chunk)
            worker_checkpoint()
    return Digest.from_hash(hasher)


async def read_head(location: BlobLocation, size: int) -> bytes:
    """The first ``size`` bytes at ``location`` (fewer when it is shorter)."""
    return await anyio.to_thread.run_sync(_read_range, location, min(size, location.size))


async def hash_location(location: BlobLocation, algorithm: str = "sha256") -> Digest:
    """The digest of the bytes at ``location``, hashed in a worker thread."""
    return await anyio.to_thread.run_sync(_hash_range, location, algorithm)


def _read_and_verify(location: BlobLocation, digest: Digest, what: str) -> bytes:
    hasher = _new_hasher(digest, what)
    data = _read_range(location, location.size)
    hasher.update(data)
    actual = Digest.from_hash(hasher)
    if actual != digest:
        raise DigestMismatchError(what, str(digest), str(actual))
    return data


class Blobs(ABC):
    """Files and blobs of one archive or layout; ``label`` names it in error messages."""

    def __init__(self, label: str) -> None:
        self.label = label

    @abstractmethod
    async def locate(self, name: str) -> BlobLocation | None:
        """Where the regular file ``name`` lies, or None when there is none."""

    async def require(self, name: str) -> BlobLocation:
        location = await self.locate(name)
        if location is None:
            raise ImageSourceError(f"{self.label}: {name} is missing")
        return location

    async def read(self, name: str, limit: int = SMALL_BLOB_LIMIT) -> bytes:
        """The bytes of the small file ``name``."""
        location = await self.require(name)
        self._check_limit(name, location, limit)
        return await anyio.to_thread.run_sync(_read_range, location, location.size)

    async def read_json(self, name: str, limit: int = SMALL_BLOB_LIMIT) -> Any:
        return parse_json(await self.read(name, limit), f"{self.label}: {name}")

    async def read_verified(
        self, name: str, digest: Digest, limit: int = SMALL_BLOB_LIMIT
    ) -> bytes:
        """The bytes of the small file ``name``, checked to hash to ``digest``."""
        return await self._read_checked(name, await self.require(name), digest, limit)

    async def blob(self, digest: Digest) -> BlobLocation:
        """Where the blob ``digest`` lies; ImageSourceError when the archive lacks it."""
        location = await self.locate(blob_name(digest))
        if location is None:
            raise ImageSourceError(f"{self.label}: blob {digest} is missing")
        return location

    async def read_small(self, digest: Digest, limit: int = SMALL_BLOB_LIMIT) -> bytes:
        """The bytes of the blob ``digest`` (at most ``limit``), verified against it."""
        return await self._read_checked(blob_name(digest), await self.blob(digest), digest, limit)

    async def _read_checked(
        self, name: str, location: BlobLocation, digest: Digest, limit: int
    ) -> bytes:
        self._check_limit(name, location, limit)
        what = f"{self.label}: {name}"
        return await anyio.to_thread.run_sync(_read_and_verify, location, digest, what)

    def _check_limit(self, name: str, location: BlobLocation, limit: int) -> None:
        if location.size > limit:
            raise ImageSourceError(
                f"{self.label}: {name} is {location.size} bytes, over the {limit}-byte limit"
            )


def _regular_file_size(path: Path) -> int | None:
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


class DirectoryBlobs(Blobs):
    """Files under a directory, such as an OCI image layout."""

    def __init__(self, root: Path, label: str | None = None) -> None:
        super().__init__(label or str(root))
        self.root = root

    async def locate(self, name: str) -> BlobLocation | None:
        normal = normalize_name(name)
        if normal is None:
            return None
        path = self.root / normal
        size = await anyio.to_thread.run_sync(_regular_file_size, path)
        return None if size is None else BlobLocation(path=path, offset=0, size=size)


class TarBlobs(Blobs):
    """Members of an indexed tar, read in place."""

    def __init__(self, index: TarIndex, label: str | None = None) -> None:
        super().__init__(label or str(index.path))
        self.index = index

    async def locate(self, name: str) -> BlobLocation | None:
        member = self.index.get(name)
        if member is None:
            return None
        return BlobLocation(path=self.index.path, offset=member.offset, size=member.size)
