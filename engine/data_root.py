"""Where the store lives (Docker's ``data-root``): ``$HOIST_ROOT``, or ``~/.local/share/hoist``.

A leaf of its own: ``hoist push`` looks for a running ``hoist serve`` on the socket in this
directory before anything of the store is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "HOIST_ROOT"


def default_root() -> Path:
    """``$HOIST_ROOT``, or ``~/.local/share/hoist``."""
    configured = os.environ.get(ROOT_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "share" / "hoist"
