"""Typed progress events: what a push tells its watchers, in Docker's words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.digest import Digest

PREPARING = "Preparing"
WAITING = "Waiting"
PUSHING = "Pushing"
PUSHED = "Pushed"
LAYER_EXISTS = "Layer already exists"


def mounted_from(repository: str) -> str:
    return f"Mounted from {repository}"


def retrying_in(seconds: int) -> str:
    return f"Retrying in {seconds} second{'s' if seconds != 1 else ''}"


@dataclass(frozen=True)
class LayerProgress:
    """A layer's state; ``current``/``total`` are bytes while Pushing."""

    id: str
    status: str
    current: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class Message:
    """A line with no layer: "The push refers to repository [...]", "Using default tag: latest"."""

    text: str


@dataclass(frozen=True)
class PushComplete:
    """The manifest is in: ``TAG: digest: sha256:… size: N`` and the JSON stream's aux object."""

    repository: str  # HOST/REPO as Docker prints it in the first line
    tag: str
    digest: Digest
    size: int


@dataclass(frozen=True)
class PushFailed:
    message: str


ProgressEvent = LayerProgress | Message | PushComplete | PushFailed

#: Where a producer sends events; a watcher's queue.put_nowait, a broadcast, or a no-op.
ProgressSink = Callable[[ProgressEvent], None]


def discard(event: ProgressEvent) -> None:
    """A sink for pushes nobody watches."""
