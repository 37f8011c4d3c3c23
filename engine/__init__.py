"""Hoist: push container images to any Docker/OCI registry, without a Docker daemon.

The public surface is imported lazily so that ``hoist --help`` does not pay for aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.version import VERSION as __version__

_EXPORTS = {
    "Engine": "engine.api",
    "PushResult": "engine.push.result",
    "LayerResult": "engine.push.result",
    "LayerOutcome": "engine.push.result",
    "ProgressEvent": "engine.progress.events",
    "LayerProgress": "engine.progress.events",
    "Message": "engine.progress.events",
    "PushComplete": "engine.progress.events",
    "PushFailed": "engine.progress.events",
    "HoistError": "engine.errors",
}

__all__ = [
    "Engine",
    "HoistError",
    "LayerOutcome",
    "LayerProgress",
    "LayerResult",
    "Message",
    "ProgressEvent",
    "PushComplete",
    "PushFailed",
    "PushResult",
    "__version__",
]

if TYPE_CHECKING:
    from engine.api import Engine
    from engine.errors import HoistError
    from engine.progress.events import (
        LayerProgress,
        Message,
        ProgressEvent,
        PushComplete,
        PushFailed,
    )
    from engine.push.result import LayerOutcome, LayerResult, PushResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
