"""Docker's JSON message stream: the progress body of ``POST /images/{name}/push``.

Objects carry Docker's keys in Docker's order (``status``, ``progressDetail``, ``progress``,
``id``, ``errorDetail``, ``error``, ``aux``), empty fields left out, and are encoded as Go's
``encoding/json`` does, so a client that parses Docker's stream parses this one unchanged.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

from engine import gojson
from engine.digest import Digest
from engine.errors import DaemonStreamError, ImageSourceError
from engine.progress.events import (
    Drawable,
    LayerProgress,
    LayerState,
    Message,
    PushCancelled,
    PushComplete,
    PushFailed,
    StreamedLayer,
)
from engine.progress.plain import digest_line
from engine.progress.units import progress_bar

#: Docker's stream formatter ends every object with CRLF.
LINE_END = "\r\n"

JSONObject = dict[str, Any]


def encode(message: JSONObject) -> str:
    """One message as Go's ``json.Marshal`` writes it (the bar's ">" comes out escaped)."""
    return gojson.marshal(message)


def layer_message(event: LayerState) -> JSONObject:
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


def aux_message(event: PushComplete, *, repository: bool = False) -> JSONObject:
    """The out-of-band result Docker sends after the digest line (its ``PushResult``); with
    ``repository``, Hoist's ``Repository`` too, for a stream of several pushes at once."""
    aux: JSONObject = {"Tag": event.tag, "Digest": str(event.digest), "Size": event.size}
    if repository:
        aux["Repository"] = event.repository
    return {"progressDetail": {}, "aux": aux}


def error_message(event: PushFailed) -> JSONObject:
    # "error" is Docker's deprecated duplicate of errorDetail.message; clients still read it.
    detail: JSONObject = {"message": event.message} if event.message else {}
    message: JSONObject = {"errorDetail": detail}
    if event.message:
        message["error"] = event.message
    return message


def messages_for(event: Drawable, *, repository: bool = False) -> list[JSONObject]:
    """Docker's messages for ``event``; ``repository``: see ``aux_message``."""
    if isinstance(event, LayerProgress | StreamedLayer):
        return [layer_message(event)]
    if isinstance(event, Message):
        return [status_message(event.text)]
    if isinstance(event, PushComplete):
        return [status_message(digest_line(event)), aux_message(event, repository=repository)]
    if isinstance(event, PushFailed):
        return [error_message(event)]
    # PushCancelled: Docker's daemon just ends the stream of a push whose client went away.
    assert isinstance(event, PushCancelled)
    return []


class JsonRenderer:
    """Writes every event as Docker's daemon would stream it, one object per line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def handle(self, event: Drawable) -> None:
        for message in messages_for(event):
            self._out.write(encode(message) + LINE_END)
        self._out.flush()

    def close(self) -> None:
        self._out.flush()


_REFERS_TO = re.compile(r"The push refers to repository \[(.+)\]")
_DIGEST_LINE = re.compile(r"\S+: digest: sha256:[0-9a-f]{64} size: \d+")


class StreamDecoder:
    """A daemon's JSON message stream read back into what the renderers draw: the inverse of
    ``messages_for``, for ``hoist push`` through ``hoist serve`` (or any daemon that streams
    Docker's messages)."""

    def __init__(self) -> None:
        #: The repository of the push under way, from its first line (Docker's aux result omits
        #: it; a stream of several pushes at once, whose lines interleave, names it there).
        self._repository = ""

    def decode(self, message: object) -> Drawable | None:
        """The event ``message`` tells, or None for one that draws nothing of its own."""
        if not isinstance(message, dict):
            raise DaemonStreamError(f"the daemon sent {type(message).__name__}, not an object")
        try:
            return self._decode(message)
        except (KeyError, TypeError, ValueError, ImageSourceError) as exc:
            raise DaemonStreamError(f"the daemon sent a message Hoist cannot read: {exc}") from exc

    def _decode(self, message: JSONObject) -> Drawable | None:
        if "errorDetail" in message or "error" in message:
            detail = message.get("errorDetail") or {}
            return PushFailed(str(detail.get("message") or message.get("error") or "push failed"))
        aux = message.get("aux")
        if aux is not None:
            digest = Digest.parse(aux["Digest"])
            repository = str(aux.get("Repository") or self._repository)
            return PushComplete(repository, str(aux["Tag"]), digest, int(aux["Size"]))
        status = message.get("status")
        if not isinstance(status, str):
            return None
        layer_id = message.get("id")
        if layer_id:
            detail = message.get("progressDetail") or {}
            return StreamedLayer(str(layer_id), status, detail.get("current"), detail.get("total"))
        if _DIGEST_LINE.fullmatch(status):
            return None  # the aux object that follows carries the result, and draws this line
        refers = _REFERS_TO.fullmatch(status)
        if refers is not None:
            self._repository = refers.group(1)
        return Message(status)
