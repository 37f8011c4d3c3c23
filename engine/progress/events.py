"""Typed progress events: what a push tells its watchers, in Docker's words.

The contract a program can rely on, without parsing a string:

- A layer's events and its ``LayerResult`` share one identity, ``layer`` (a full ``Digest``):
  join ``PushResult.layers`` and ``LayerProgress`` on it. ``id`` is Docker's 12-character form.
- ``LayerProgress.status`` is a ``LayerStatus``; ``text`` is Docker's words for it.
- ``current``/``total`` count bytes of what the push reads; ``measure`` says whether those are
  the uncompressed tar's (Docker's meaning) or the blob's, as the source holds the layer.
- Every push ends with exactly one ``PushEnded`` (``PushComplete``, ``PushFailed`` or
  ``PushCancelled``), and it is the last event that push sends: a consumer stops on it.
- Events are frozen values (``engine.value.Value``): equal when their fields are, hashable, never
  changed once made.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from engine.digest import Digest
from engine.value import Value


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


class LayerProgress(Value):
    """A layer's state.

    ``layer`` is the layer's identity, shared with its ``LayerResult``: its diff ID, or its
    blob's digest when the source does not know the diff ID. While ``PUSHING``, ``current`` is
    how many bytes of the layer's source the push has read and ``total`` the source's size,
    both in the unit ``measure`` names; they are None otherwise. ``source`` is the repository a
    ``MOUNTED`` layer came from, ``retry_in`` the seconds left before a ``RETRYING`` layer tries
    again.
    """

    __slots__ = ("current", "layer", "measure", "retry_in", "source", "status", "total")
    layer: Digest
    status: LayerStatus
    current: int | None
    total: int | None
    measure: Measure | None
    source: str | None
    retry_in: int | None

    def __init__(
        self,
        layer: Digest,
        status: LayerStatus,
        current: int | None = None,
        total: int | None = None,
        measure: Measure | None = None,
        source: str | None = None,
        retry_in: int | None = None,
    ) -> None:
        super().__init__(layer, status, current, total, measure, source, retry_in)

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


class StreamedLayer(Value):
    """A layer's state as a daemon's JSON message stream tells it (``hoist push`` through
    ``hoist serve``): Docker's 12-character ID and words, which is all the stream carries."""

    __slots__ = ("current", "id", "text", "total")
    id: str
    text: str
    current: int | None
    total: int | None

    def __init__(
        self, id: str, text: str, current: int | None = None, total: int | None = None
    ) -> None:
        super().__init__(id, text, current, total)

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


class Message(Value):
    """A line with no layer: "The push refers to repository [...]", "Using default tag: latest"."""

    __slots__ = ("text",)
    text: str

    def __init__(self, text: str) -> None:
        super().__init__(text)


class PushEnded(Value):
    """The last event of every push: ``isinstance(event, PushEnded)`` says a consumer may stop.

    A push sends exactly one, however it ends; ``Engine.push_many`` sends one per reference.
    """

    __slots__ = ()


class PushComplete(PushEnded):
    """The manifest is in: ``TAG: digest: sha256:… size: N`` and the JSON stream's aux object."""

    __slots__ = ("digest", "repository", "size", "tag")
    repository: str  # HOST/REPO as Docker prints it in the first line
    tag: str
    digest: Digest
    size: int

    def __init__(self, repository: str, tag: str, digest: Digest, size: int) -> None:
        super().__init__(repository, tag, digest, size)


class PushFailed(PushEnded):
    """The push of ``ref`` (as the caller named it) failed with ``error``; no manifest was PUT.
    Two are equal when their message and ref are."""

    __slots__ = ("error", "message", "ref")
    _uncompared = frozenset({"error"})
    message: str
    ref: str
    error: Exception | None

    def __init__(self, message: str, ref: str = "", error: Exception | None = None) -> None:
        super().__init__(message, ref, error)


class PushCancelled(PushEnded):
    """The push of ``ref`` was cancelled (Ctrl-C, a task cancelled, a batch stopped by a bug);
    sent before the cancellation goes on."""

    __slots__ = ("ref",)
    ref: str

    def __init__(self, ref: str = "") -> None:
        super().__init__(ref)


ProgressEvent = LayerProgress | Message | PushComplete | PushFailed | PushCancelled

#: A layer's line, from a push in this process or from a daemon's stream.
LayerState = LayerProgress | StreamedLayer

#: What a renderer draws: a push's events, or a layer's state read from a daemon's stream.
Drawable = ProgressEvent | StreamedLayer

#: Where a producer sends events; a watcher's queue.put_nowait, a broadcast, or a no-op.
ProgressSink = Callable[[ProgressEvent], None]


def discard(event: ProgressEvent) -> None:
    """A sink for pushes nobody watches."""
