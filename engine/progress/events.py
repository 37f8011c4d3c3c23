"""Typed progress events: what a push tells its watchers, in Docker's words.

The contract a program can rely on, without parsing a string:

- A layer's events and its ``LayerResult`` share one identity, ``layer`` (a full ``Digest``):
  join ``PushResult.layers`` and ``LayerProgress`` on it. ``id`` is Docker's 12-character form.
- ``LayerProgress.status`` is a ``LayerStatus``; ``text`` is Docker's words for it.
- ``current``/``total`` count bytes of what the push reads; ``measure`` says whether those are
  the uncompressed tar's (Docker's meaning) or the blob's, as the source holds the layer.
- Every push ends with exactly one ``PushEnded`` (``PushComplete``, ``PushFailed`` or
  ``PushCancelled``), and it is the last event that push sends: a consumer stops on it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.digest import Digest


class LayerStatus(enum.Enum):
    """A layer's state; each value is Docker's word for it (``MOUNTED`` and ``RETRYING`` are
    completed by the event's ``source`` and ``retry_in``: use ``LayerProgress.text``)."""

    PREPARING = "Preparing"
    #: Only while the layer really waits: for an upload slot, or for another push of this run
    #: that is placing the same blob.
    WAITING = "Waiting"
    PUSHING = "Pushing"
    PUSHED = "Pushed"
    EXISTS = "Layer already exists"
    MOUNTED = "Mounted from"
    RETRYING = "Retrying in"


class Measure(enum.Enum):
    """What a ``Pushing`` event's ``current``/``total`` count."""

    #: The layer's uncompressed tar, which the push compresses as it sends it (a layer of the
    #: store or of an archive that holds it uncompressed): Docker's own meaning.
    TAR = "tar"
    #: The blob itself, sent as the source holds it (an OCI layout's blob, a compressed archive
    #: layer): its size is the blob's size in the manifest.
    BLOB = "blob"


@dataclass(frozen=True)
class LayerProgress:
    """A layer's state.

    ``layer`` is the layer's identity, shared with its ``LayerResult``: its diff ID, or its
    blob's digest when the source does not know the diff ID. While ``PUSHING``, ``current`` is
    how many bytes of the layer's source the push has read and ``total`` the source's size,
    both in the unit ``measure`` names; they are None otherwise. ``source`` is the repository a
    ``MOUNTED`` layer came from, ``retry_in`` the seconds left before a ``RETRYING`` layer tries
    again.
    """

    layer: Digest
    status: LayerStatus
    current: int | None = None
    total: int | None = None
    measure: Measure | None = None
    source: str | None = None
    retry_in: int | None = None

    @property
    def id(self) -> str:
        """The 12 hex characters Docker shows for the layer."""
        return self.layer.short

    @property
    def text(self) -> str:
        """Docker's words for the status: "Pushed", "Mounted from library/base"…"""
        words: str = self.status.value
        if self.status is LayerStatus.MOUNTED:
            return f"{words} {self.source}"
        if self.status is LayerStatus.RETRYING:
            seconds = self.retry_in
            return f"{words} {seconds} second{'s' if seconds != 1 else ''}"
        return words


@dataclass(frozen=True)
class StreamedLayer:
    """A layer's state as a daemon's JSON message stream tells it (``hoist push`` through
    ``hoist serve``): Docker's 12-character ID and words, which is all the stream carries."""

    id: str
    text: str
    current: int | None = None
    total: int | None = None

    @property
    def status(self) -> LayerStatus | None:
        """The status the words say, None for words Hoist does not send."""
        for status in LayerStatus:
            if self.text == status.value or self.text.startswith(status.value + " "):
                return status
        return None


def mounted(layer: Digest, source: str) -> LayerProgress:
    return LayerProgress(layer, LayerStatus.MOUNTED, source=source)


def retrying(layer: Digest, seconds: int) -> LayerProgress:
    return LayerProgress(layer, LayerStatus.RETRYING, retry_in=seconds)


def pushing(layer: Digest, current: int, total: int, measure: Measure) -> LayerProgress:
    return LayerProgress(layer, LayerStatus.PUSHING, current, total, measure)


@dataclass(frozen=True)
class Message:
    """A line with no layer: "The push refers to repository [...]", "Using default tag: latest"."""

    text: str


class PushEnded:
    """The last event of every push: ``isinstance(event, PushEnded)`` says a consumer may stop.

    A push sends exactly one, however it ends; ``Engine.push_many`` sends one per reference.
    """

    __slots__ = ()


@dataclass(frozen=True)
class PushComplete(PushEnded):
    """The manifest is in: ``TAG: digest: sha256:… size: N`` and the JSON stream's aux object."""

    repository: str  # HOST/REPO as Docker prints it in the first line
    tag: str
    digest: Digest
    size: int


@dataclass(frozen=True)
class PushFailed(PushEnded):
    """The push of ``ref`` (as the caller named it) failed with ``error``; no manifest was PUT."""

    message: str
    ref: str = ""
    error: Exception | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PushCancelled(PushEnded):
    """The push of ``ref`` was cancelled (Ctrl-C, a task cancelled, a batch stopped by a bug);
    sent before the cancellation goes on."""

    ref: str = ""


ProgressEvent = LayerProgress | Message | PushComplete | PushFailed | PushCancelled

#: A layer's line, from a push in this process or from a daemon's stream.
LayerState = LayerProgress | StreamedLayer

#: What a renderer draws: a push's events, or a layer's state read from a daemon's stream.
Drawable = ProgressEvent | StreamedLayer

#: Where a producer sends events; a watcher's queue.put_nowait, a broadcast, or a no-op.
ProgressSink = Callable[[ProgressEvent], None]


def discard(event: ProgressEvent) -> None:
    """A sink for pushes nobody watches."""
