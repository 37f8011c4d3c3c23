"""Open whatever a path holds — a docker-archive, an OCI layout or an OCI archive — as images.

A tar with ``manifest.json`` is a docker-archive, even when it also carries ``index.json`` (Docker
≥ 25 writes both); a tar with ``oci-layout`` and ``index.json`` but no ``manifest.json`` is an OCI
archive; a directory with ``oci-layout`` is an OCI layout. Compressed tars are decompressed to a
temporary file that lives as long as the ``open_archive`` context. OCI layouts and archives may hold
multi-platform indexes beside plain images; they are chosen by name the same way.
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from engine.errors import ImageSourceError
from engine.image.base import SourceImage, SourceIndex
from engine.image.blobs import DirectoryBlobs, TarBlobs
from engine.image.docker_archive import MANIFEST_FILE, read_docker_archive
from engine.image.oci_layout import INDEX_FILE, LAYOUT_FILE, read_oci_layout
from engine.image.tarsafe import TarIndex, open_tar

DOCKER_ARCHIVE = "docker-archive"
OCI_LAYOUT = "oci-layout"
OCI_ARCHIVE = "oci-archive"


def tag_of(name: str) -> str | None:
    """The tag part of ``repo:tag`` (a colon after the last slash), or None."""
    last = name.rpartition("/")[2].partition("@")[0]
    return last.rpartition(":")[2] if ":" in last else None


#: What an archive holds: plain images, and (in OCI layouts) multi-platform indexes.
ArchiveEntry = SourceImage | SourceIndex


def describe(entry: ArchiveEntry) -> str:
    """How an image or index is listed when the user must choose one."""
    if entry.names:
        return ", ".join(entry.names)
    if isinstance(entry, SourceIndex):
        return f"<untagged index {entry.digest.short}>"
    return f"<untagged {entry.id.short}>"


@dataclass(frozen=True)
class ImageArchive:
    """The images and indexes found at ``path`` and what kind of source holds them."""

    path: Path
    kind: str
    images: list[ArchiveEntry]

    def select(self, tag: str | None) -> ArchiveEntry:
        """The one entry, or the one named ``tag`` (a full name, an OCI ref name or a tag)."""
        if len(self.images) == 1:
            return self.images[0]
        if not self.images:
            raise ImageSourceError(f"{self.path} holds no images")
        if tag is None:
            raise ImageSourceError(
                f"{self.path} holds {len(self.images)} images; name one of: {self._listing()}"
            )
        return self._by_tag(tag)

    def _by_tag(self, tag: str) -> ArchiveEntry:
        exact = [i for i in self.images if tag in i.names]
        tagged = exact or [i for i in self.images if any(tag_of(n) == tag for n in i.names)]
        if len(tagged) == 1:
            return tagged[0]
        if tagged:
            raise ImageSourceError(
                f"{tag!r} matches several images in {self.path}: {self._listing(tagged)}; "
                "give the full name"
            )
        raise ImageSourceError(
            f"{self.path} holds no image named {tag!r}; it holds: {self._listing()}"
        )

    def _listing(self, images: Sequence[ArchiveEntry] | None = None) -> str:
        return "; ".join(describe(i) for i in (self.images if images is None else images))


def _kind_of_path(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageSourceError(f"{path}: no such file or directory") from None
    except OSError as e:
        raise ImageSourceError(f"{path}: cannot read: {e.strerror or e}") from e
    if stat.S_ISDIR(mode):
        if not (path / LAYOUT_FILE).is_file():
            raise ImageSourceError(
                f"{path} is a directory but not an OCI image layout (it has no {LAYOUT_FILE} file)"
            )
        return OCI_LAYOUT
    return "tar"


def _kind_of_tar(path: Path, index: TarIndex) -> str:
    if MANIFEST_FILE in index:
        return DOCKER_ARCHIVE
    if LAYOUT_FILE in index and INDEX_FILE in index:
        return OCI_ARCHIVE
    raise ImageSourceError(
        f"{path} is neither a docker-archive (no {MANIFEST_FILE}) "
        f"nor an OCI archive (no {LAYOUT_FILE} and {INDEX_FILE})"
    )


async def _read_tar(path: Path, index: TarIndex) -> ImageArchive:
    kind = _kind_of_tar(path, index)
    blobs = TarBlobs(index, label=str(path))
    if kind == DOCKER_ARCHIVE:
        images = await read_docker_archive(blobs, f"{DOCKER_ARCHIVE}:{path}")
        return ImageArchive(path=path, kind=kind, images=list(images))
    entries = await read_oci_layout(blobs, f"{OCI_ARCHIVE}:{path}")
    return ImageArchive(path=path, kind=kind, images=entries)


@contextlib.asynccontextmanager
async def open_archive(path: Path, *, tmp_dir: Path | None = None) -> AsyncIterator[ImageArchive]:
    """The images at ``path``; layers read from it (or its decompressed copy) while open."""
    if await anyio.to_thread.run_sync(_kind_of_path, path) == OCI_LAYOUT:
        images = await read_oci_layout(DirectoryBlobs(path), f"oci:{path}")
        yield ImageArchive(path=path, kind=OCI_LAYOUT, images=images)
        return
    async with open_tar(path, tmp_dir=tmp_dir) as index:
        yield await _read_tar(path, index)
