"""Leftovers of writes that a crash (``kill -9``) interrupted: found and removed at the next start.

Every temp name carries its writer's pid (``.tmp-PID-RANDOM``); one whose writer is no longer
alive can never be finished, so it goes. A live writer's temp files are left alone.

This runs before every command, so it does not walk what cannot hold a temp name: the
subdirectories of a ``settled`` directory (a committed layer is renamed into place whole and never
written into again) are looked at by name, not entered. Otherwise each command would read one
directory per layer ever loaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from pathlib import Path

from engine.temp_names import writer_pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def sweep_leftovers(root: Path, settled: Collection[Path] = ()) -> list[Path]:
    """Remove abandoned temp files and directories under ``root`` (which need not exist), without
    entering the subdirectories of ``settled`` directories; what was removed."""
    removed: list[Path] = []
    not_entered = {os.path.normpath(path) for path in settled}
    for directory, subdirectories, files in os.walk(root):
        for name in [*subdirectories, *files]:
            pid = writer_pid(name)
            if pid is None or alive(pid):
                continue
            path = Path(directory) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        if os.path.normpath(directory) in not_entered:
            subdirectories.clear()
        else:
            subdirectories[:] = [d for d in subdirectories if writer_pid(d) is None]
    return removed
