"""Plain progress for pipes and log files: one line per layer state change, nothing redrawn."""

from __future__ import annotations

from typing import TextIO

from engine.progress.events import (
    Drawable,
    LayerProgress,
    LayerState,
    Message,
    PushComplete,
    StreamedLayer,
)


def digest_line(event: PushComplete) -> str:
    """The line ``docker push`` ends with: ``TAG: digest: sha256:… size: N``."""
    return f"{event.tag}: digest: {event.digest} size: {event.size}"


def layer_line(layer_id: str, text: str) -> str:
    return f"{layer_id}: {text}" if layer_id else text


class LineRenderer:
    """What the line-based renderers share: a layer's state, or a line of its own."""

    def handle(self, event: Drawable) -> None:
        if isinstance(event, LayerProgress | StreamedLayer):
            self._layer(event)
        elif isinstance(event, Message):
            self._section(event.text)
        elif isinstance(event, PushComplete):
            self._section(digest_line(event))
        # PushFailed: the CLI prints the ``Error: …`` line itself; PushCancelled: nothing, as
        # Docker's client prints nothing more when interrupted.

    def _layer(self, event: LayerState) -> None:
        raise NotImplementedError

    def _section(self, text: str) -> None:
        raise NotImplementedError


class PlainRenderer(LineRenderer):
    """Writes ``ID: Status`` when a layer's status changes; byte counts are left out.

    Docker's own non-terminal output drops any status that carries byte counts, so a log
    never says a layer started pushing; this one prints "Pushing" once when it starts.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._status_by_id: dict[str, str] = {}

    def close(self) -> None:
        self._out.flush()

    def _layer(self, event: LayerState) -> None:
        if self._status_by_id.get(event.id) == event.text:
            return
        self._status_by_id[event.id] = event.text
        self._write(layer_line(event.id, event.text))

    def _section(self, text: str) -> None:
        # A line without a layer starts a new section (the next tag of an --all-tags push),
        # whose layers report their states afresh.
        self._status_by_id.clear()
        self._write(text)

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()
