"""Sending one blob into an upload session, and carrying on when the network or registry falters.

The body goes as one streaming ``PATCH``, or in ``Content-Range`` chunks when asked (or when the
registry refuses a large body with 413). When a request fails with a temporary error, the
session's status (``GET`` → ``Range``) says how much the registry kept, and the upload resumes
from there — the deterministic stream re-makes the skipped part without sending it. Only when
the registry no longer knows the session does a new one start from byte 0. A committed blob is
recognised even when the answer to its ``PUT`` was lost.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import structlog

from engine.descriptor import Descriptor
from engine.errors import RegistryResponseError
from engine.push.encode import LayerStream, Reading
from engine.registry.client import RegistryClient
from engine.registry.protocol import UploadSession, UploadStatus
from engine.retry import RetryPolicy, retry_call

log = structlog.get_logger("engine.push")

T = TypeVar("T")

#: Blobs whose source is at most this long go in one request; held in memory meanwhile.
SMALL_BLOB_SIZE = 2 << 20

#: Chunk size when a registry refuses a whole blob in one request (413) and none was chosen.
AUTO_CHUNK_SIZE = 8 << 20

#: One source of backoff jitter for every upload (seeding one per layer costs more than it buys).
_JITTER = random.Random()

#: Called with the delay before a retry; it waits (and may give the upload slot back meanwhile).
WaitBeforeRetry = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class UploadOptions:
    """How blobs go: the retry policy, and a chunk size (None: one streaming PATCH)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    chunk_size: int | None = None


@dataclass
class BlobSender:
    client: RegistryClient
    repository: str
    policy: RetryPolicy
    wait: WaitBeforeRetry
    chunk_size: int | None = None
    rng: random.Random = field(default_factory=lambda: _JITTER)
    #: Body bytes sent, retries included (the benchmark and the resend ratio read it).
    sent: int = 0

    async def send(self, stream: LayerStream, session: UploadSession | None) -> Descriptor:
        """Upload ``stream`` and commit it; the blob's descriptor. Raises after the last try.

        A session left uncommitted (a permanent error, the last try failed, cancellation) is
        deleted, shielded, so nothing is left open in the registry.
        """
        if session is None:
            session = await self._retrying(self.client.initiate_upload, self.repository)
        self._location = session.location
        try:
            return await self._send(stream, session)
        except BaseException:
            await self._abandon()
            raise

    async def _send(self, stream: LayerStream, session: UploadSession) -> Descriptor:
        if self.chunk_size is None and stream.layer.size <= SMALL_BLOB_SIZE:
            return await self._send_whole(stream, session)
        return await self._send_stream(stream, session)

    async def _send_whole(self, stream: LayerStream, session: UploadSession) -> Descriptor:
        """A small blob in the commit ``PUT`` itself: one request fewer than PATCH + PUT."""
        body = b"".join([piece async for piece in stream])
        blob = stream.descriptor()
        attempt = 0
        while True:
            try:
                self.sent += len(body)
                await self.client.commit_blob(self.repository, self._location, blob.digest, body)
                return blob
            except Exception as exc:
                attempt += 1
                if await self._already_committed(stream):
                    return blob
                if _too_large(exc):
                    self.chunk_size = AUTO_CHUNK_SIZE
                    return await self._send_stream(stream, session)
                if not self.policy.is_temporary(exc) or attempt >= self.policy.attempts:
                    raise
                await self.wait(self.policy.delay_for(exc, attempt, self.rng))
            # What a failed PUT left in the session is unknown: the whole body goes again, fresh.
            await self._abandon()
            session = await self._retrying(self.client.initiate_upload, self.repository)
            self._location = session.location

    async def _send_stream(self, stream: LayerStream, session: UploadSession) -> Descriptor:
        offset, attempt, whole = 0, 0, None
        while True:
            try:
                if whole is None or offset < whole:
                    await self._send_body(stream, session, offset)
                    whole = stream.size
                blob = stream.descriptor()
                await self.client.commit_blob(self.repository, self._location, blob.digest)
                return blob
            except Exception as exc:
                attempt += 1
                if whole is not None and await self._already_committed(stream):
                    return stream.descriptor()
                if not self._recoverable(exc, attempt):
                    raise
                if _too_large(exc) and self.chunk_size is None:
                    self.chunk_size = AUTO_CHUNK_SIZE
                else:
                    await self.wait(self.policy.delay_for(exc, attempt, self.rng))
            session, offset = await self._resume_point(session)

    def _recoverable(self, exc: Exception, attempt: int) -> bool:
        if attempt >= self.policy.attempts:
            return False
        return (_too_large(exc) and self.chunk_size is None) or self.policy.is_temporary(exc)

    async def _send_body(self, stream: LayerStream, session: UploadSession, offset: int) -> None:
        if self.chunk_size is None:
            async with aclosing(_Body(stream, offset, self)) as body:
                self._location = await self.client.patch_blob(self.repository, self._location, body)
            return
        size = max(self.chunk_size, session.min_chunk)
        buffer = bytearray()
        position = offset
        async with aclosing(stream.from_offset(offset)) as pieces:
            async for piece in pieces:
                buffer += piece
                while len(buffer) >= size:
                    await self._send_chunk(bytes(buffer[:size]), position)
                    position += size
                    del buffer[:size]
        if buffer:
            await self._send_chunk(bytes(buffer), position)

    async def _send_chunk(self, chunk: bytes, start: int) -> None:
        self.sent += len(chunk)
        self._location = await self.client.patch_chunk(
            self.repository, self._location, chunk, start
        )

    async def _resume_point(self, session: UploadSession) -> tuple[UploadSession, int]:
        """Where to go on: the same session at the registry's offset, or a new one from 0."""
        status = await self._status()
        if status is not None:
            self._location = status.location
            return UploadSession(status.location, session.min_chunk), status.offset
        log.info("upload session lost; starting again", repository=self.repository)
        await self._abandon()
        fresh = await self._retrying(self.client.initiate_upload, self.repository)
        self._location = fresh.location
        return fresh, 0

    async def _status(self) -> UploadStatus | None:
        try:
            return await self._retrying(self.client.upload_status, self.repository, self._location)
        except RegistryResponseError:
            return None  # an answer that is no status: the session is no good either

    async def _retrying(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One request of the upload, tried again on temporary errors."""
        return await retry_call(self.policy, call, *args, sleep=self.wait)

    async def _already_committed(self, stream: LayerStream) -> bool:
        """The ``PUT`` may have gone through even though its answer did not come back."""
        try:
            return await self.client.check_blob(self.repository, stream.digest) is not None
        except Exception:
            return False

    async def _abandon(self) -> None:
        await abandon(self.client, self.repository, self._location)


async def abandon(client: RegistryClient, repository: str, location: str) -> None:
    """``DELETE`` a session that will not be committed: shielded from cancellation, bounded,
    best effort (the upload already failed or moved on)."""
    with anyio.CancelScope(shield=True):
        try:
            with anyio.fail_after(5):
                await client.cancel_upload(repository, location)
        except Exception as exc:
            log.debug("upload not deleted", error=str(exc))


@dataclass
class _Body:
    """A PATCH body from ``offset``, counted into ``sent``; iterable again if the request is
    sent again (re-authentication). ``aclose`` closes every pass it started, the ones a request
    left half-read included."""

    stream: LayerStream
    offset: int
    sender: BlobSender
    _readings: list[Reading] = field(default_factory=list)

    def __aiter__(self) -> _Counted:
        reading = self.stream.from_offset(self.offset)
        self._readings.append(reading)
        return _Counted(reading, self.sender)

    async def aclose(self) -> None:
        for reading in self._readings:
            await reading.aclose()


@dataclass
class _Counted:
    """A pass's pieces, each counted into the sender's ``sent`` as it goes out."""

    reading: Reading
    sender: BlobSender

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        piece = await self.reading.__anext__()
        self.sender.sent += len(piece)
        return piece


def _too_large(exc: Exception) -> bool:
    return isinstance(exc, RegistryResponseError) and exc.status == 413
