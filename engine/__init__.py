"""Hoist: push container images to any Docker/OCI registry, without a Docker daemon.

Everything a program needs is importable from here. The names load lazily, so that the command
line's ``hoist --help`` does not pay for aiohttp; type checkers see them through the
``TYPE_CHECKING`` imports below, which mirror ``_EXPORTS`` and ``__all__`` name for name (a test
holds the three together), and a name that is not exported is an error for them as it is at
run time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from engine.version import VERSION as __version__

if TYPE_CHECKING:
    from engine.api import BatchItem, Engine, ProgressTarget, Relogin
    from engine.errors import HoistError
    from engine.progress.events import (
        LayerProgress,
        LayerStatus,
        Measure,
        Message,
        ProgressEvent,
        PushCancelled,
        PushComplete,
        PushEnded,
        PushFailed,
    )
    from engine.push.result import LayerOutcome, LayerResult, PushResult
    from engine.registry.auth_config import AuthConfig
    from engine.registry.pool import Timeouts
    from engine.retry import Backoff, RetryPolicy

#: Each public name and the module that defines it.
_EXPORTS = {
    "Engine": "engine.api",
    "BatchItem": "engine.api",
    "ProgressTarget": "engine.api",
    "Relogin": "engine.api",
    "HoistError": "engine.errors",
    "ProgressEvent": "engine.progress.events",
    "LayerProgress": "engine.progress.events",
    "LayerStatus": "engine.progress.events",
    "Measure": "engine.progress.events",
    "PushEnded": "engine.progress.events",
    "PushCancelled": "engine.progress.events",
    "Message": "engine.progress.events",
    "PushComplete": "engine.progress.events",
    "PushFailed": "engine.progress.events",
    "PushResult": "engine.push.result",
    "LayerResult": "engine.push.result",
    "LayerOutcome": "engine.push.result",
    "AuthConfig": "engine.registry.auth_config",
    "Timeouts": "engine.registry.pool",
    "RetryPolicy": "engine.retry",
    "Backoff": "engine.retry",
}

__all__ = [
    "AuthConfig",
    "Backoff",
    "BatchItem",
    "Engine",
    "HoistError",
    "LayerOutcome",
    "LayerProgress",
    "LayerResult",
    "LayerStatus",
    "Measure",
    "Message",
    "ProgressEvent",
    "ProgressTarget",
    "PushCancelled",
    "PushComplete",
    "PushEnded",
    "PushFailed",
    "PushResult",
    "Relogin",
    "RetryPolicy",
    "Timeouts",
    "__version__",
]

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'engine' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # found once; later lookups do not come here
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_EXPORTS})
