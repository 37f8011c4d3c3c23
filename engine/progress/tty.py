"""Terminal progress: one line per layer, redrawn in place with ANSI cursor moves, as Docker does.

The cursor rests on the empty line below the layer lines. A layer seen for the first time gets
a new line there; redrawing a line moves the cursor up to it, erases and rewrites it, and moves
back down. A line without a layer (a message, the digest line) prints at the resting place and
starts a new block of layer lines, as Docker's jsonmessage does.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import TextIO

from engine.progress.events import LayerState, LayerStatus
from engine.progress.plain import LineRenderer, layer_line
from engine.progress.units import MIN_WIDTH_FOR_BAR, progress_text

ERASE_LINE = "\x1b[2K"

#: Docker's width when it cannot ask the terminal.
DEFAULT_WIDTH = 200

#: Byte updates redraw a line at most this often; a status change redraws at once.
REDRAW_INTERVAL = 0.1


def cursor_up(lines: int) -> str:
    return f"\x1b[{lines}A" if lines else ""


def cursor_down(lines: int) -> str:
    return f"\x1b[{lines}B" if lines else ""


def terminal_width(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns or DEFAULT_WIDTH
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return DEFAULT_WIDTH


class _Line:
    """A layer's line: where it is and what it shows."""

    __slots__ = ("drawn_at", "index", "pending", "status")

    def __init__(self, index: int, status: str, drawn_at: float) -> None:
        self.index = index
        self.status = status  # as drawn: Docker's words
        self.drawn_at = drawn_at
        self.pending: LayerState | None = None


class TtyRenderer(LineRenderer):
    """Draws each layer's ``ID: Status [bar] cur/total`` line in place on a terminal."""

    def __init__(
        self,
        out: TextIO,
        *,
        width: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._width = width if width is not None else terminal_width(out)
        self._clock = clock
        self._lines: dict[str, _Line] = {}

    def close(self) -> None:
        self._draw_pending()
        self._out.flush()

    def _layer(self, event: LayerState) -> None:
        line = self._lines.get(event.id)
        if line is None:
            line = _Line(index=len(self._lines), status=event.text, drawn_at=0.0)
            self._lines[event.id] = line
            self._out.write("\n")
        elif not self._due(line, event):
            line.pending = event
            return
        self._draw(line, event)

    def _due(self, line: _Line, event: LayerState) -> bool:
        """Whether ``event`` must be drawn now rather than folded into a later redraw."""
        if event.text != line.status or event.status is not LayerStatus.PUSHING:
            return True
        finished = event.total is not None and event.current == event.total
        return finished or self._clock() - line.drawn_at >= REDRAW_INTERVAL

    def _draw(self, line: _Line, event: LayerState) -> None:
        rows_up = len(self._lines) - line.index
        text = self._fit(layer_line(event.id, f"{event.text} {self._progress(event)}"))
        self._out.write(f"{cursor_up(rows_up)}{ERASE_LINE}\r{text}\r{cursor_down(rows_up)}")
        self._out.flush()
        line.status = event.text
        line.drawn_at = self._clock()
        line.pending = None

    def _draw_pending(self) -> None:
        for line in self._lines.values():
            if line.pending is not None:
                self._draw(line, line.pending)

    def _section(self, text: str) -> None:
        self._draw_pending()
        self._lines.clear()
        self._out.write(text + "\n")
        self._out.flush()

    def _progress(self, event: LayerState) -> str:
        return progress_text(event.current, event.total, with_bar=self._width > MIN_WIDTH_FOR_BAR)

    def _fit(self, text: str) -> str:
        # A line that wraps takes two rows and throws every later cursor move off by one.
        return text[: self._width - 1] if self._width > 1 else text
