"""Temporary names that say who wrote them: ``.tmp-PID-RANDOM``.

Whatever Hoist writes before it is complete (a store file, a layer directory, a decompressed
archive) carries such a name, so readers skip it and the next start's sweep knows it for the
leftover of a writer that died (its pid no longer alive). A leaf: the store and the image
sources both name their temporary files here, and neither imports the other for it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TMP_PREFIX = ".tmp-"


def temp_path(directory: Path) -> Path:
    """A fresh, recognisable temp name inside ``directory`` (same file system as the target)."""
    return directory / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"


def writer_pid(name: str) -> int | None:
    """The pid of the writer of a temp name; None for any other name."""
    if not name.startswith(TMP_PREFIX):
        return None
    pid, _, _ = name[len(TMP_PREFIX) :].partition("-")
    return int(pid) if pid.isdigit() else None
