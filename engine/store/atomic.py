"""Crash-safe file writes and the cross-process lock: the only ways the store changes on disk.

A file is written to a temp file in its own directory, flushed, fsynced and renamed over the
target, so a reader sees the old bytes or the new ones, never a mix. Temp names
(``engine.temp_names``) say who wrote them, so readers (and a later clean-up) can tell an
interrupted write from real data.
Read-modify-write sequences run under ``exclusive_lock``: an ``flock`` on one file in the root,
which serialises threads of one process as well as separate processes (each holder opens its own
file description).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from engine.errors import StoreError
from engine.temp_names import temp_path

T = TypeVar("T")


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist yet) with ``data``, flushed to disk."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_file(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically, and durably unless told otherwise.

    ``durable=False`` is for what is only a cache (push metadata): still atomic — a reader sees
    the old bytes or the new — but without the fsyncs that a busy disk makes slow; and a file
    that already holds ``data`` is left alone (replacing a file costs a filesystem like ext4 far
    more than reading a small one).
    """
    if not durable and _holds(path, data):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path.parent)
        try:
            if durable:
                write_durable(tmp, data)
            else:
                tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            fsync_dir(path.parent)
    except OSError as e:
        raise StoreError(f"{path}: cannot write: {e.strerror or e}") from e


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False  # absent or unreadable: written anew


def write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    """Write ``value`` as compact JSON, the way Go's ``json.Marshal`` lays it out."""
    write_file(path, json.dumps(value, separators=(",", ":")).encode(), durable=durable)


def read_file(path: Path) -> bytes | None:
    """The bytes of ``path``, or None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"{path}: cannot read: {e.strerror or e}") from e


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, None when absent; corrupt JSON is a StoreError naming it."""
    data = read_file(path)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: corrupt JSON: {e}") from e


class ParsedOnce(Generic[T]):
    """A file that is only ever replaced whole, parsed again only when it was replaced.

    Replacement gives the file a new inode, so an unchanged inode, size and times mean
    unchanged content, except in one race: another process replacing the file twice within one
    tick of the filesystem clock, the second time reusing the first inode number with the same
    size. A reader then sees the older content, as if it had read a moment earlier; a
    read-modify-write under the store's lock must read the file itself. ``get`` hands out the
    parsed value itself: callers must not change it. A file that does not exist is parsed too
    (``parse`` says what that means).
    """

    def __init__(self, path: Path, parse: Callable[[Path], T]) -> None:
        self.path = path
        self._parse = parse
        self._version: tuple[int, ...] | None = None
        self._parsed: T | None = None

    def get(self) -> T:
        version = _version(self.path)
        if self._parsed is None or version is None or version != self._version:
            # Stat first, then read: a replacement in between is read now and seen as a new
            # version next time, so a stale parse is never kept.
            self._parsed = self._parse(self.path)
            self._version = version
        return self._parsed


def _version(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # the parser says what is wrong, if anything is
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def rename_into_place(staged: Path, target: Path) -> bool:
    """Move the directory ``staged`` to ``target``; False (and ``staged`` removed) if it exists.

    ``target`` existing means another writer finished the same content first: theirs is as good.
    """
    try:
        os.rename(staged, target)
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise StoreError(f"{target}: cannot rename into place: {e.strerror or e}") from e
        shutil.rmtree(staged, ignore_errors=True)
        return False
    fsync_dir(target.parent)
    return True


def remove_dir(path: Path) -> None:
    """Delete a directory so that readers see it whole or not at all.

    Renaming to a temp name first makes the disappearance atomic; the slow tree removal then
    works on a name no reader looks at.
    """
    doomed = temp_path(path.parent)
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    except OSError as e:
        raise StoreError(f"{path}: cannot remove: {e.strerror or e}") from e
    shutil.rmtree(doomed, ignore_errors=True)


@contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (blocking: call from a worker thread)."""
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"{lock_file}: cannot open lock: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        # Closing the descriptor releases the lock.
        os.close(fd)
