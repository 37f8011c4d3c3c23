"""Index the members of an image archive in place, refusing entries that could escape it.

Layers are read where they lie in the tar (``offset_data``), never extracted, so the index is all a
source needs: each regular member's name, offset and size. Names are normalised; absolute names,
``..`` that climbs out of the root and device files are refused. Links are kept only when they land
on a regular member inside the archive (Docker ≥ 25 writes ``<id>/layer.tar`` as a symlink into
``blobs/sha256/``); they index as that member's bytes. A compressed archive (``docker load`` accepts
gzip, bzip2 and xz) is first decompressed, streaming and off the event loop, into a temporary file
named as the store names its temp files, so that a copy a crash left behind is swept at next start.
"""

from __future__ import annotations

import bz2
import contextlib
import lzma
import posixpath
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, cast

import anyio
import anyio.from_thread
import anyio.to_thread
from isal import igzip, isal_zlib

from engine.errors import ImageSourceError, UnsafeArchiveError
from engine.temp_names import temp_path

GZIP_MAGIC = b"\x1f\x8b"
_COMPRESSION_MAGIC = {"gzip": GZIP_MAGIC, "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00"}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BLOCK_SIZE = tarfile.BLOCKSIZE
_COPY_SIZE = 1 << 20
#: What the decompressors raise on damaged data (isal's stub mistypes its error class).
_CORRUPT_DATA_ERRORS: tuple[type[Exception], ...] = (
    EOFError,
    lzma.LZMAError,
    zlib.error,
    cast("type[Exception]", isal_zlib.error),
)
#: Link chains longer than this are loops in practice.
_MAX_LINK_HOPS = 32


@dataclass(frozen=True)
class TarMember:
    """A regular file's bytes inside the tar; for a link, the bytes of the member it names."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class TarIndex:
    """The regular members of an uncompressed tar, by normalised name, links resolved."""

    path: Path
    members: Mapping[str, TarMember]

    def get(self, name: str) -> TarMember | None:
        normal = normalize_name(name)
        return None if normal is None else self.members.get(normal)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


def normalize_name(name: str) -> str | None:
    """``name`` relative to the archive root, or None when it is absolute or climbs out."""
    if name.startswith("/"):
        return None
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../"):
        return None
    return normal


def sniff_compression(head: bytes) -> str | None:
    """The compression whose magic bytes start ``head``, or None for a plain tar."""
    if head.startswith(_ZSTD_MAGIC):
        raise ImageSourceError("zstd-compressed archives are not supported; decompress it first")
    for kind, magic in _COMPRESSION_MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def index_tar(path: Path, *, label: str | None = None) -> TarIndex:
    """Index the tar at ``path`` (blocking; run it in a thread). ``label`` names it in errors."""
    label = label or str(path)
    try:
        with tarfile.open(path, "r:") as tar:
            entries = _read_entries(tar, label)
            end = tar.offset
    except tarfile.TarError as e:
        raise ImageSourceError(f"{label}: truncated or not a tar archive") from e
    except OSError as e:
        raise ImageSourceError(f"{label}: cannot read: {e.strerror or e}") from e
    _check_end_of_archive(path, end, label)
    return TarIndex(path=path, members=_resolve(entries, label))


def _read_entries(tar: tarfile.TarFile, label: str) -> dict[str, tarfile.TarInfo]:
    # A later entry with the same name replaces an earlier one, as when tar extracts.
    entries: dict[str, tarfile.TarInfo] = {}
    for info in tar:
        name = normalize_name(info.name)
        if name is None:
            raise UnsafeArchiveError(f"{label}: entry {info.name!r} escapes the archive root")
        if info.ischr() or info.isblk() or info.isfifo():
            raise UnsafeArchiveError(f"{label}: entry {info.name!r} is a device or fifo")
        if info.issparse():
            raise ImageSourceError(f"{label}: entry {info.name!r} is a sparse file; not supported")
        if info.isreg() or info.issym() or info.islnk():
            entries[name] = info
    return entries


def _check_end_of_archive(path: Path, end: int, label: str) -> None:
    # tarfile stops quietly at a short or garbled header; a real tar ends with zero blocks.
    with path.open("rb") as f:
        f.seek(end)
        block = f.read(_BLOCK_SIZE)
    if len(block) != _BLOCK_SIZE or block.count(0) != _BLOCK_SIZE:
        raise ImageSourceError(f"{label}: truncated or not a tar archive")


def _resolve(entries: dict[str, tarfile.TarInfo], label: str) -> dict[str, TarMember]:
    return {name: _resolve_one(name, entries, label) for name in entries}


def _resolve_one(name: str, entries: dict[str, tarfile.TarInfo], label: str) -> TarMember:
    current = name
    for _ in range(_MAX_LINK_HOPS):
        info = entries.get(current)
        if info is None:
            raise UnsafeArchiveError(
                f"{label}: link {name!r} does not resolve to a regular member of the archive"
            )
        if info.isreg():
            return TarMember(name=name, offset=info.offset_data, size=info.size)
        current = _link_target(current, info, label)
    raise UnsafeArchiveError(f"{label}: link {name!r} is part of a loop")


def _link_target(name: str, info: tarfile.TarInfo, label: str) -> str:
    # A symlink is relative to its own directory; a hard link names a member from the root.
    if info.issym():
        joined = posixpath.join(posixpath.dirname(name), info.linkname)
        target = None if info.linkname.startswith("/") else normalize_name(joined)
    else:
        target = normalize_name(info.linkname)
    if target is None:
        raise UnsafeArchiveError(
            f"{label}: link {name!r} -> {info.linkname!r} points outside the archive"
        )
    return target


def _read_head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def _open_decompressed(path: Path, kind: str) -> IO[bytes]:
    if kind == "gzip":
        return cast(IO[bytes], igzip.open(path, "rb"))  # type: ignore[no-untyped-call]
    if kind == "bzip2":
        return bz2.open(path, "rb")
    return lzma.open(path, "rb")


def worker_checkpoint() -> None:
    """Let a long copy or hash in a worker thread stop once its task is cancelled."""
    with contextlib.suppress(RuntimeError):  # not in an anyio worker thread: nothing to check
        anyio.from_thread.check_cancelled()


def decompress(source: Path, target: Path, kind: str, *, label: str | None = None) -> None:
    """Stream-decompress ``source`` into ``target`` (blocking; run it in a thread)."""
    label = label or str(source)
    try:
        with _open_decompressed(source, kind) as src, target.open("wb") as dst:
            while chunk := src.read(_COPY_SIZE):
                dst.write(chunk)
                worker_checkpoint()
    except _CORRUPT_DATA_ERRORS as e:
        raise ImageSourceError(f"{label}: truncated or corrupt {kind} data ({e})") from e
    except OSError as e:
        raise ImageSourceError(f"{label}: cannot decompress {kind} data: {e}") from e


def _make_temp_file(tmp_dir: Path | None) -> Path:
    # The store's temp name (writer's pid inside): when a kill -9 interrupts the copy, the next
    # start's sweep of the store root knows it as abandoned and removes it.
    path = temp_path(tmp_dir if tmp_dir is not None else Path(tempfile.gettempdir()))
    path.touch(exist_ok=False)
    return path


@contextlib.asynccontextmanager
async def open_tar(path: Path, *, tmp_dir: Path | None = None) -> AsyncIterator[TarIndex]:
    """Index the tar at ``path``, decompressing it first into ``tmp_dir`` when it is compressed.

    The temporary file, if any, is removed on exit, even on cancellation.
    """
    try:
        head = await anyio.to_thread.run_sync(_read_head, path, 8)
    except OSError as e:
        raise ImageSourceError(f"{path}: cannot read: {e.strerror or e}") from e
    kind = sniff_compression(head)
    if kind is None:
        yield await anyio.to_thread.run_sync(partial(index_tar, path))
        return
    try:
        temp = await anyio.to_thread.run_sync(_make_temp_file, tmp_dir)
    except OSError as e:
        raise ImageSourceError(f"cannot create a temporary file to decompress {path}: {e}") from e
    try:
        await anyio.to_thread.run_sync(partial(decompress, path, temp, kind))
        yield await anyio.to_thread.run_sync(partial(index_tar, temp, label=str(path)))
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(partial(temp.unlink, missing_ok=True))
