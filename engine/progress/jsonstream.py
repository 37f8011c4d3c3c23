"""Docker's JSON message stream: the progress body of ``POST /images/{name}/push``.

Objects carry Docker's keys in Docker's order (``status``, ``progressDetail``, ``progress``,
``id``, ``errorDetail``, ``error``, ``aux``), empty fields left out, and are encoded as Go's
``encoding/json`` does, so a client that parses Docker's stream parses this one unchanged.
"""

from __future__ import annotations

from typing import Any, TextIO

from engine import gojson
from engine.progress.events import (
    LayerProgress,
    Message,
    ProgressEvent,
    PushCancelled,
    PushComplete,
    PushFailed,
)
from engine.progress.plain import digest_line
from engine.progress.units import progress_bar

#: Docker's stream formatter ends every object with CRLF.
LINE_END = "\r\n"

JSONObject = dict[str, Any]


def encode(message: JSONObject) -> str:
    """One message as Go's ``json.Marshal`` writes it (the bar's ">" comes out escaped)."""
    return gojson.marshal(message)


def layer_message(event: LayerProgress) -> JSONObject:
    detail: JSONObject = {}
    if event.current:
        detail["current"] = event.current
    if event.total:
        detail["total"] = event.total
    message: JSONObject = {"status": event.text, "progressDetail": detail}
    bar = progress_bar(event.current or 0, event.total)
    if bar:
        message["progress"] = bar
    if event.id:
        message["id"] = event.id
    return message


def status_message(text: str) -> JSONObject:
    return {"status": text}


def aux_message(event: PushComplete) -> JSONObject:
    """The out-of-band result Docker sends after the digest line (its ``PushResult``)."""
    aux = {"Tag": event.tag, "Digest": str(event.digest), "Size": event.size}
    return {"progressDetail": {}, "aux": aux}


def error_message(event: PushFailed) -> JSONObject:
    # "error" is Docker's deprecated duplicate of errorDetail.message; clients still read it.
    detail: JSONObject = {"message": event.message} if event.message else {}
    message: JSONObject = {"errorDetail": detail}
    if event.message:
        message["error"] = event.message
    return message


def messages_for(event: ProgressEvent) -> list[JSONObject]:
    if isinstance(event, LayerProgress):
        return [layer_message(event)]
    if isinstance(event, Message):
        return [status_message(event.text)]
    if isinstance(event, PushComplete):
        return [status_message(digest_line(event)), aux_message(event)]
    if isinstance(event, PushFailed):
        return [error_message(event)]
    # PushCancelled: Docker's daemon just ends the stream of a push whose client went away.
    assert isinstance(event, PushCancelled)
    return []


class JsonRenderer:
    """Writes every event as Docker's daemon would stream it, one object per line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def handle(self, event: ProgressEvent) -> None:
        for message in messages_for(event):
            self._out.write(encode(message) + LINE_END)
        self._out.flush()

    def close(self) -> None:
        self._out.flush()
