"""One blob's upload as a pure state machine: steps out, answers in, no I/O.

As the auth flow is, this is a generator the driver (``upload.BlobSender``) runs: it yields a
``Step``, the driver carries it out against the registry and sends back the answer, or throws in
the error the step raised. Every decision — whole body or stream or chunks, where to resume, when
to open a new session, when to give up — is made here from those values alone, so a test drives
it with plain values; what a failure means is asked of ``engine.retry`` (``Attempts``).

The steps mirror the Distribution API: ``POST`` a session, one streaming ``PATCH`` (or
``Content-Range`` chunks), ``PUT ?digest=`` to commit (with the whole body for a small blob),
``GET`` the session's status to resume, ``HEAD`` the blob when a commit's answer was lost, and
``DELETE`` a session that will not be committed.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

from engine.registry.protocol import UploadSession, UploadStatus
from engine.retry import Attempts, Decision, Remedy

A = TypeVar("A")

#: Chunk size when a registry refuses a whole blob in one request (413) and none was chosen.
AUTO_CHUNK_SIZE = 8 << 20


@dataclass(frozen=True)
class Step(Generic[A]):
    """Something for the driver to do; its answer is an ``A``."""

    #: The type of the answer, checked: a driver's mistake fails here, not three steps later.
    answers: ClassVar[type | tuple[type, ...]] = type(None)

    def accepted(self, answer: object) -> A:
        assert isinstance(answer, self.answers), (self, answer)
        return cast(A, answer)


@dataclass(frozen=True)
class Open(Step[UploadSession]):
    """``POST`` a new upload session."""

    answers = UploadSession


@dataclass(frozen=True)
class Sent:
    """The answer to a send: the session's next location, and the blob offset now reached."""

    location: str
    end: int
    last: bool = True  # the blob's end was reached


@dataclass(frozen=True)
class Patch(Step[Sent]):
    """Stream the blob from ``offset`` to its end in one ``PATCH``."""

    answers = Sent

    location: str
    offset: int


@dataclass(frozen=True)
class PatchChunk(Step[Sent]):
    """Send at most ``size`` bytes from ``start`` with ``Content-Range`` (none once at the end)."""

    answers = Sent

    location: str
    start: int
    size: int


@dataclass(frozen=True)
class Commit(Step[None]):
    """``PUT ?digest=``: with the whole blob as its body when ``whole``, else none."""

    location: str
    whole: bool = False


@dataclass(frozen=True)
class Status(Step[UploadStatus | None]):
    """``GET`` the session: what the registry kept (None: it cannot be told)."""

    answers = (UploadStatus, type(None))

    location: str


@dataclass(frozen=True)
class Committed(Step[bool]):
    """``HEAD`` the blob: whether a commit whose answer was lost went through."""

    answers = bool


@dataclass(frozen=True)
class Abandon(Step[None]):
    """``DELETE`` a session that will not be committed (best effort)."""

    location: str


@dataclass(frozen=True)
class Wait(Step[None]):
    """Wait ``delay`` seconds before trying again (the driver may give its slot back)."""

    delay: float


Flow = Generator[Step[Any], object, None]


class UploadFlow:
    """The decisions of one blob's upload; ``session`` is the open one, if any (the driver
    deletes it when the upload ends without a commit)."""

    def __init__(
        self,
        attempts: Attempts,
        *,
        session: UploadSession | None = None,
        chunk_size: int | None = None,
        whole_in_commit: bool = False,
    ) -> None:
        self.attempts = attempts
        self.session = session
        self.chunk_size = chunk_size
        #: A small blob goes as the commit's body: one request fewer than PATCH + PUT.
        self.whole_in_commit = whole_in_commit and chunk_size is None
        self.committed = False

    @property
    def location(self) -> str | None:
        return None if self.session is None else self.session.location

    def run(self) -> Flow:
        if self.session is None:
            yield from self._open()
        if self.whole_in_commit:
            yield from self._whole()
        else:
            yield from self._streamed()
        self.committed = True

    def _open(self) -> Flow:
        while True:
            try:
                self.session = yield from _ask(Open())
                return
            except Exception as error:
                delay = self.attempts.wait_after(error)
                if delay is None:
                    raise
            yield Wait(delay)

    def _whole(self) -> Flow:
        """Body in the commit; a failed ``PUT`` leaves the session in a state nobody knows, so
        the next try sends the body again in a fresh one."""
        while True:
            try:
                yield from _ask(Commit(self._location(), whole=True))
                return
            except Exception as error:
                if (yield from self._already_committed()):
                    return
                decision = self.attempts.upload_failed(error, chunked=False)
                if decision.remedy is Remedy.GIVE_UP:
                    raise
            if decision.remedy is Remedy.CHUNKS:
                self.chunk_size, self.whole_in_commit = AUTO_CHUNK_SIZE, False
                yield from self._streamed()
                return
            yield Wait(decision.delay)
            yield from self._new_session()

    def _streamed(self) -> Flow:
        offset, whole = 0, None  # the blob's size, once a pass has reached its end
        while True:
            try:
                if whole is None or offset < whole:
                    whole = yield from self._send_from(offset)
                yield from _ask(Commit(self._location()))
                return
            except Exception as error:
                if whole is not None and (yield from self._already_committed()):
                    return
                decision = self.attempts.upload_failed(error, chunked=self.chunk_size is not None)
                if decision.remedy is Remedy.GIVE_UP:
                    raise
            offset = yield from self._carry_out(decision)

    def _send_from(self, offset: int) -> Generator[Step[Any], object, int]:
        """Send the blob from ``offset`` on; its size."""
        if self.chunk_size is None:
            sent = yield from _ask(Patch(self._location(), offset))
            self._moved_to(sent.location)
            return sent.end
        assert self.session is not None
        size = max(self.chunk_size, self.session.min_chunk)
        while True:
            sent = yield from _ask(PatchChunk(self._location(), offset, size))
            self._moved_to(sent.location)
            offset = sent.end
            if sent.last:
                return offset

    def _carry_out(self, decision: Decision) -> Generator[Step[Any], object, int]:
        """Go on as decided; the offset to send from."""
        if decision.remedy is Remedy.CHUNKS:
            self.chunk_size = AUTO_CHUNK_SIZE
        else:
            yield Wait(decision.delay)
        if decision.remedy is not Remedy.NEW_SESSION:
            kept = yield from self._kept()
            if kept is not None:
                return kept
        yield from self._new_session()
        return 0

    def _kept(self) -> Generator[Step[Any], object, int | None]:
        """How much of the blob the session holds; None when the session is no good."""
        while True:
            try:
                status = yield from _ask(Status(self._location()))
            except Exception as error:
                decision = self.attempts.status_failed(error)
                if decision.remedy is Remedy.GIVE_UP:
                    raise
                if decision.remedy is Remedy.NEW_SESSION:
                    return None
                yield Wait(decision.delay)
                continue
            if status is None:
                return None
            self._moved_to(status.location)
            return status.offset

    def _new_session(self) -> Flow:
        yield Abandon(self._location())
        self.session = None
        yield from self._open()

    def _already_committed(self) -> Generator[Step[Any], object, bool]:
        """The ``PUT`` may have gone through even though its answer did not come back."""
        try:
            return (yield from _ask(Committed()))
        except Exception:
            return False

    def _location(self) -> str:
        assert self.session is not None, "a step that needs a session runs with one open"
        return self.session.location

    def _moved_to(self, location: str) -> None:
        assert self.session is not None
        self.session = UploadSession(location, self.session.min_chunk)


def _ask(step: Step[A]) -> Generator[Step[Any], object, A]:
    """Yield ``step`` and return its answer, typed; a failed step raises its error here."""
    answer = yield step
    return step.accepted(answer)
