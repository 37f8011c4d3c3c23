"""Renderers: the one interface that draws progress events, choosing one, and driving it.

Modes: ``tty`` (lines redrawn in place), ``plain`` (a line per state change), ``json`` (Docker's
JSON message stream), ``auto`` (tty on a terminal, plain elsewhere); ``quiet`` overrides them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TextIO

from engine.progress.events import Drawable, ProgressEvent, PushComplete, PushEnded
from engine.progress.jsonstream import JsonRenderer
from engine.progress.plain import PlainRenderer
from engine.progress.tty import TtyRenderer
from engine.progress.units import human_size, progress_bar

if TYPE_CHECKING:
    # Only named in annotations: the CLI imports this module before it needs an event loop.
    import asyncio

__all__ = [
    "MODES",
    "JsonRenderer",
    "PlainRenderer",
    "QuietRenderer",
    "Renderer",
    "TtyRenderer",
    "human_size",
    "make_renderer",
    "progress_bar",
    "render",
]

MODES = ("auto", "tty", "plain", "json")


class Renderer(Protocol):
    def handle(self, event: Drawable) -> None: ...

    def close(self) -> None:
        """Final flush; a terminal renderer leaves the cursor below its last line."""


class QuietRenderer:
    """``docker push --quiet``: only ``REPOSITORY:TAG@DIGEST`` for each pushed tag."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def handle(self, event: Drawable) -> None:
        if isinstance(event, PushComplete):
            self._out.write(f"{event.repository}:{event.tag}@{event.digest}\n")
            self._out.flush()

    def close(self) -> None:
        self._out.flush()


def make_renderer(mode: str, out: TextIO, *, quiet: bool = False) -> Renderer:
    """The renderer for ``mode`` (one of MODES) writing to ``out``."""
    if mode not in MODES:
        raise ValueError(f"unknown progress mode {mode!r}; expected one of {', '.join(MODES)}")
    if quiet:
        return QuietRenderer(out)
    if mode == "auto":
        mode = "tty" if out.isatty() else "plain"
    if mode == "tty":
        return TtyRenderer(out)
    if mode == "json":
        return JsonRenderer(out)
    return PlainRenderer(out)


async def render(
    queue: asyncio.Queue[ProgressEvent], renderer: Renderer, *, pushes: int = 1
) -> None:
    """Draw events from ``queue`` until ``pushes`` pushes have ended (each push's last event is
    a ``PushEnded``); close the renderer however this ends."""
    try:
        while pushes > 0:
            event = await queue.get()
            renderer.handle(event)
            queue.task_done()
            if isinstance(event, PushEnded):
                pushes -= 1
    finally:
        renderer.close()
