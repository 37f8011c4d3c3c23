"""The upload's driver: carries out the steps of ``upload_flow`` against a registry.

The flow decides; this module does the I/O it asks for: reading the blob (from an offset, in
chunks, or whole for a small blob), sending it, and deleting a session the upload leaves
uncommitted — shielded from cancellation, so nothing stays open in the registry. Written for
anyio (cancel scopes shield and bound that ``DELETE``); it starts no task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from engine import logs
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import DigestInvalidError, DigestMismatchError, ImageSourceError
from engine.push import upload_flow as flow
from engine.registry.api import RegistryAPI, blob_size
from engine.registry.protocol import UploadSession
from engine.retry import Attempts, RetryPolicy

log = logs.get_logger("engine.push")

#: Blobs whose source is at most this long go in one request; held in memory meanwhile (the
#: transfer manager's slot is this size, so its budget bounds that memory).
SMALL_BLOB_SIZE = 2 << 20

#: Called with the delay before a retry; it waits (and may give the upload slot back meanwhile).
WaitBeforeRetry = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class UploadOptions:
    """How blobs go: the retry policy, and a chunk size (None: one streaming PATCH)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    chunk_size: int | None = None


class Pieces(Protocol):
    """One pass over a blob's bytes; ``aclose`` ends it early (closing its source)."""

    def __aiter__(self) -> Pieces: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


class BlobSource(Protocol):
    """A blob's bytes, made again from any offset (each pass from the start: the digest
    covers the whole blob), and what the latest whole pass was."""

    @property
    def size(self) -> int:
        """Blob bytes made by the latest pass so far."""
        ...

    @property
    def length(self) -> int | None:
        """The whole blob's size when it is known before a pass (not for one being compressed)."""
        ...

    @property
    def digest(self) -> Digest: ...

    @property
    def digest_checked(self) -> bool:
        """Whether this process hashed the bytes to get or check ``digest``. When not, the
        digest is the source's word, and the registry's check at commit is the one there is."""
        ...

    def from_offset(self, start: int) -> Pieces: ...

    def descriptor(self) -> Descriptor:
        """What the latest whole pass made, checked against what the source promised."""
        ...


@dataclass(frozen=True)
class BytesSource:
    """A blob already in memory (an image config): its descriptor is known up front."""

    blob: Descriptor
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def length(self) -> int:
        return len(self.data)

    @property
    def digest(self) -> Digest:
        return self.blob.digest

    @property
    def digest_checked(self) -> bool:
        return True  # its reader checked the bytes, or hashed them to name them

    def from_offset(self, start: int) -> Pieces:
        return _Once(self.data[start:])

    def descriptor(self) -> Descriptor:
        return self.blob


@dataclass
class _Once:
    """``data`` as one piece."""

    data: bytes
    _done: bool = False

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        if self._done or not self.data:
            raise StopAsyncIteration
        self._done = True
        return self.data

    async def aclose(self) -> None:
        self._done = True


@dataclass
class BlobSender:
    api: RegistryAPI
    repository: str
    attempts: Attempts
    wait: WaitBeforeRetry
    chunk_size: int | None = None
    #: Body bytes sent, retries included (the benchmark and the resend ratio read it).
    sent: int = 0

    async def send(
        self, source: BlobSource, session: UploadSession | None, *, small: bool
    ) -> Descriptor:
        """Upload ``source`` and commit it; the blob's descriptor. Raises after the last try.

        ``small``: the source is short enough to go whole in the commit's body.
        """
        machine = flow.UploadFlow(
            self.attempts, session=session, chunk_size=self.chunk_size, whole_in_commit=small
        )
        steps, run = _Steps(self, source), machine.run()
        try:
            await _drive(run, steps)
        except BaseException:
            if machine.location is not None:
                await abandon(self.api, self.repository, machine.location)
            raise
        finally:
            run.close()
            await steps.aclose()
            self.chunk_size = machine.chunk_size
        return source.descriptor()


async def _drive(machine: flow.Flow, steps: _Steps) -> None:
    """Run the flow to its end: each step carried out, its answer (or error) handed back."""
    step = next(machine)
    while True:
        try:
            try:
                answer = await steps.carry_out(step)
            except Exception as error:
                step = machine.throw(error)
            else:
                step = machine.send(answer)
        except StopIteration:
            return


@dataclass
class _Steps:
    """The I/O behind each step, for one blob."""

    sender: BlobSender
    source: BlobSource
    _whole: bytes | None = None
    _chunks: _ChunkReader | None = None

    async def carry_out(self, step: flow.Step[Any]) -> object:
        api, repository = self.sender.api, self.sender.repository
        match step:
            case flow.Open():
                return await api.initiate_upload(repository)
            case flow.Patch(location, offset):
                length = None if self.source.length is None else self.source.length - offset
                async with aclosing(_Body(self.source, offset, self.sender)) as body:
                    try:
                        location = await api.patch_blob(repository, location, body, length)
                    except Exception:
                        # aiohttp reports a body that failed as a failed connection, which
                        # would be retried: the source's own error is the one to raise.
                        if body.failure is not None:
                            raise body.failure from None
                        raise
                return flow.Sent(location, self.source.size)
            case flow.PatchChunk(location, start, size):
                return await self._chunk(location, start, size)
            case flow.Commit(location, whole):
                await self._commit(location, whole)
                return None
            case flow.Status(location):
                return await api.upload_status(repository, location)
            case flow.Committed():
                return await blob_size(api, repository, self.source.digest) is not None
            case flow.Abandon(location):
                await abandon(api, repository, location)
                return None
            case flow.Wait(delay):
                await self.sender.wait(delay)
                return None
        raise AssertionError(f"a step the driver does not know: {step!r}")

    async def _commit(self, location: str, whole: bool) -> None:
        body = await self._whole_body() if whole else b""
        self.sender.sent += len(body)
        digest = self.source.descriptor().digest
        try:
            await self.sender.api.commit_blob(self.sender.repository, location, digest, body)
        except DigestInvalidError as error:
            if self.source.digest_checked:
                raise
            # The registry hashed what it received: the source's bytes are not its digest's.
            raise DigestMismatchError(f"blob {digest.short}", str(digest), None) from error

    async def _whole_body(self) -> bytes:
        """The blob in memory, made once however often its ``PUT`` is tried."""
        if self._whole is None:
            async with aclosing(self.source.from_offset(0)) as pieces:
                self._whole = b"".join([piece async for piece in pieces])
        return self._whole

    async def _chunk(self, location: str, start: int, size: int) -> flow.Sent:
        if self._chunks is None or self._chunks.position != start:
            await self.aclose()
            self._chunks = _ChunkReader(self.source.from_offset(start), start)
        chunk, last = await self._chunks.take(size)
        if chunk:
            self.sender.sent += len(chunk)
            location = await self.sender.api.patch_chunk(
                self.sender.repository, location, chunk, start
            )
        return flow.Sent(location, start + len(chunk), last)

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()
            self._chunks = None


@dataclass
class _ChunkReader:
    """The blob's bytes cut into chunks, reading one piece ahead to tell the last chunk."""

    pieces: Pieces
    position: int
    _buffer: bytearray = field(default_factory=bytearray)
    _ended: bool = False

    async def take(self, size: int) -> tuple[bytes, bool]:
        """The next chunk of at most ``size`` bytes, and whether it is the blob's last."""
        while not self._ended and len(self._buffer) <= size:
            try:
                self._buffer += await anext(self.pieces)
            except StopAsyncIteration:
                self._ended = True
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.position += len(chunk)
        return chunk, self._ended and not self._buffer

    async def aclose(self) -> None:
        await self.pieces.aclose()


async def abandon(api: RegistryAPI, repository: str, location: str) -> None:
    """``DELETE`` a session that will not be committed: shielded from cancellation, bounded,
    best effort (the upload already failed or moved on)."""
    with anyio.CancelScope(shield=True):
        try:
            with anyio.fail_after(5):
                await api.cancel_upload(repository, location)
        except Exception as exc:
            log.debug("upload not deleted", error=str(exc))


@dataclass
class _Body:
    """A PATCH body from ``offset``, counted into ``sent``; iterable again if the request is
    sent again (re-authentication). ``aclose`` closes every pass it started, the ones a request
    left half-read included."""

    source: BlobSource
    offset: int
    sender: BlobSender
    #: What the source raised while the request read it (a file cut short), if anything.
    failure: ImageSourceError | None = None
    _readings: list[Pieces] = field(default_factory=list)

    def __aiter__(self) -> _Counted:
        reading = self.source.from_offset(self.offset)
        self._readings.append(reading)
        return _Counted(reading, self)

    async def aclose(self) -> None:
        for reading in self._readings:
            await reading.aclose()


@dataclass
class _Counted:
    """A pass's pieces, each counted into the sender's ``sent`` as it goes out; the source's
    failure noted on the body, whatever the request then makes of it."""

    reading: Pieces
    body: _Body

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        try:
            piece = await self.reading.__anext__()
        except ImageSourceError as error:
            self.body.failure = error
            raise
        self.body.sender.sent += len(piece)
        return piece
