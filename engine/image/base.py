"""The small core every image source implements, and the file-backed parts they share.

A source (the store, a docker-archive, an OCI layout or archive) hands the pusher an ``Image``:
its config bytes, its layers, and — for sources that carry one — the manifest to push byte for
byte; or, for a multi-platform image, a ``SourceIndex`` whose children are such images. A layer
either is already a registry blob (``descriptor`` set: pushed as it is) or is an uncompressed tar
that the pusher compresses (``descriptor`` None). Every body is re-openable, from any offset, so a
retry or a resume can replay it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import aiofiles

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import ImageSourceError
from engine.image.index import Platform, choose_platform

#: Read size for file-backed blobs: large enough that a thread hop per chunk costs nothing.
CHUNK_SIZE = 1 << 20


@runtime_checkable
class Layer(Protocol):
    @property
    def diff_id(self) -> Digest | None:
        """sha256 of the uncompressed tar, when the source knows it."""

    @property
    def descriptor(self) -> Descriptor | None:
        """The blob as pushed, when it already is one; None when the pusher must compress."""

    @property
    def size(self) -> int:
        """How many bytes ``open()`` yields."""

    @property
    def verified(self) -> bool:
        """True when the source has already checked that the bytes hash to ``diff_id``."""

    def open(self, offset: int = 0) -> AsyncIterator[bytes]:
        """A fresh stream of the layer's bytes from ``offset``."""

    def reader(self, offset: int = 0) -> LayerReader:
        """A reader of the layer's bytes from ``offset`` to its end (``size``): its ``read``
        blocks, for use off the event loop, and raises rather than end early when its file is
        short; its ``read_cached`` never waits for a disk.

        The pusher reads, hashes and compresses a chunk in one worker-thread call: one hop per
        chunk instead of two.
        """


class LayerReader(Protocol):
    """A layer's bytes, read in order."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` next bytes, blocking; raises EOFError where the file ends early."""
        ...

    def read_cached(self, size: int, /) -> bytes | None:
        """Up to ``size`` next bytes if memory holds them, without ever waiting for a disk (so
        the event loop may call it); None when they must be read by ``read``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Image(Protocol):
    @property
    def config(self) -> bytes:
        """The image config, byte for byte; its sha256 is the image ID."""

    @property
    def config_media_type(self) -> str: ...

    @property
    def layers(self) -> Sequence[Layer]: ...

    @property
    def manifest(self) -> tuple[str, bytes] | None:
        """(media type, bytes) of a manifest to push as it is, or None to build schema 2."""


async def read_file_range(
    path: Path, offset: int, size: int, chunk_size: int = CHUNK_SIZE
) -> AsyncIterator[bytes]:
    """Stream ``size`` bytes of ``path`` starting at ``offset``, reading off the event loop."""
    remaining = size
    async with aiofiles.open(path, "rb") as f:
        await f.seek(offset)
        while remaining > 0:
            chunk = await f.read(min(chunk_size, remaining))
            if not chunk:
                raise EOFError(f"{path}: ended {remaining} bytes early")
            remaining -= len(chunk)
            yield chunk


@dataclass(frozen=True)
class FileLayer:
    """A layer whose bytes lie at ``offset`` in a file: layout blob, tar member or store tar."""

    path: Path
    size: int
    offset: int = 0
    diff_id: Digest | None = None
    descriptor: Descriptor | None = None
    verified: bool = False

    def open(self, offset: int = 0) -> AsyncIterator[bytes]:
        return read_file_range(self.path, self.offset + offset, self.size - offset)

    def reader(self, offset: int = 0) -> FileSlice:
        return FileSlice(self.path, self.offset + offset, self.size - offset)


#: A read that fails rather than wait for the disk (Linux ≥ 4.14; not every file system).
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None) if hasattr(os, "preadv") else None
#: The file system cannot tell whether a read would wait (tmpfs, for one, says EOPNOTSUPP).
_CANNOT_TELL = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})


class FileSlice:
    """``size`` bytes of a file from ``offset``, read like a file that ends there.

    ``read_cached`` reads what the page cache holds with ``RWF_NOWAIT``: a blob that goes as it
    is then costs the event loop a copy per piece, where a worker thread's read costs a hop
    (about 0.1 ms of CPU here, as much as reading 256 KiB).
    """

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._file = path.open("rb", buffering=0)
        self._position = offset
        self._remaining = size
        self._nowait = _NOWAIT
        self._buffer = bytearray()

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > self._remaining:
            size = self._remaining
        return self._took(os.pread(self._file.fileno(), size, self._position), size)

    def read_cached(self, size: int, /) -> bytes | None:
        size = min(size, self._remaining)
        if self._nowait is None or size == 0:
            return None if size else b""
        if len(self._buffer) < size:
            self._buffer = bytearray(size)  # reused: a fresh one per piece costs page faults
        with memoryview(self._buffer)[:size] as view:
            try:
                got = os.preadv(self._file.fileno(), [view], self._position, self._nowait)
            except BlockingIOError:
                return None
            except OSError as error:
                if error.errno not in _CANNOT_TELL:
                    raise
                self._nowait = None
                return None
            # Nothing at all: the file ends early, which ``read`` reports.
            return self._took(bytes(view[:got]), size) if got else None

    def _took(self, data: bytes, size: int) -> bytes:
        self._position += len(data)
        self._remaining -= len(data)
        if size and not data:
            raise EOFError(f"{self._file.name}: ended {self._remaining} bytes early")
        return data

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class SourceImage:
    """An image assembled by a source: the plain implementation of ``Image``."""

    config: bytes
    layers: Sequence[Layer]
    config_media_type: str
    manifest: tuple[str, bytes] | None = None
    #: Where it came from, for messages ("docker-archive:x.tar", "oci:dir:tag", "store").
    origin: str = ""
    #: Tags the source names for it (docker-archive RepoTags, OCI ref names), as written.
    names: tuple[str, ...] = field(default=())

    @property
    def id(self) -> Digest:
        return Digest.of(self.config)


@dataclass(frozen=True)
class IndexChild:
    """A manifest that an index lists: its descriptor there, and its image if the source has it."""

    descriptor: Descriptor
    image: SourceImage | None = None
    #: Why ``image`` is None: which blob the source lacks. A layout may lack the blobs of the
    #: platforms it was not asked to copy; that matters only when that child is used.
    missing: str = ""

    @property
    def platform(self) -> Platform | None:
        return Platform.of(self.descriptor.platform)

    def require(self) -> SourceImage:
        """The child's image; ImageSourceError naming the missing blob when the source lacks it."""
        if self.image is None:
            raise ImageSourceError(self.missing or f"manifest {self.descriptor.digest} is missing")
        return self.image


@dataclass(frozen=True)
class SourceIndex:
    """A multi-platform image (OCI index or Docker manifest list) with the children it lists.

    The pusher pushes every child's manifest by digest, then ``raw`` byte for byte, so that the
    registry holds the same index digest; ``select_platform`` picks one child instead.
    """

    media_type: str
    raw: bytes
    #: Every manifest the index lists, in its order.
    manifests: Sequence[IndexChild]
    origin: str = ""
    names: tuple[str, ...] = field(default=())

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    @property
    def children(self) -> list[tuple[Descriptor, SourceImage]]:
        """Each child's descriptor and image, to push the whole index; fails if one is missing."""
        return [(child.descriptor, child.require()) for child in self.manifests]

    def select_platform(self, platform: str) -> SourceImage:
        """The child for ``os/arch[/variant]``; ImageSourceError listing the platforms if none."""
        platforms = [child.platform for child in self.manifests]
        what = self.origin or f"index {self.digest}"
        return self.manifests[choose_platform(platform, platforms, what)].require()
