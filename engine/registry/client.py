"""The HTTP side of the Distribution API: aiohttp carries bytes; protocol.py and auth/ decide.

One ``RegistryClient`` talks to one endpoint (scheme + host) through a shared keep-alive pool.
Each request runs through the host's auth flow (challenge → token → retry), which is pure: this
module only sends what the flow yields. Each method is one protocol step, named as the spec
names it. Written for asyncio, as aiohttp is; a token request shared by flows is a
``SingleFlight``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Generator, Mapping, Sequence
from typing import TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
import anyio.to_thread
from aiohttp.abc import AbstractStreamWriter

from engine import logs
from engine.concurrency import Flight, SingleFlight
from engine.digest import Digest
from engine.errors import TransportError
from engine.registry import protocol, tls
from engine.registry.auth import Authenticator, HttpRequest, HttpResponse, repository_scope
from engine.registry.protocol import UploadSession, UploadStatus
from engine.registry.throttle import HostGate
from engine.retry import parse_retry_after

log = logs.get_logger("engine.registry")

#: What the connection, not the registry, says: unreachable, reset, timed out, or an answer that
#: is not HTTP at all. (The endpoint loop falls back on these; retries treat them as temporary.)
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)

T = TypeVar("T")

#: Answers that send a blob request elsewhere (object storage behind the registry).
REDIRECTS = (301, 302, 303, 307, 308)

#: Bytes bodies longer than this go to aiohttp as a ``_WholeBody`` (aiohttp warns of raw bytes
#: over its own limit for them).
RAW_BODY_MAX = 1 << 20

#: Bodies longer than this ask for "100 Continue" first.
EXPECT_CONTINUE_ABOVE = 64 * 1024

#: What identifies a token request: method, URL, body and headers (credentials included).
_TokenKey = tuple[str, str, bytes | None, tuple[tuple[str, str], ...]]


#: A request body: bytes, or a stream that can be iterated again when the flow resends it.
Body = bytes | AsyncIterable[bytes] | None


class RegistryClient:
    """The protocol steps against one endpoint, e.g. ``http://127.0.0.1:5000``: the
    ``RegistryAPI`` a push uses, over aiohttp."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base: str,
        *,
        auth: Authenticator,
        ssl_context: ssl.SSLContext | None = None,
        gate: HostGate | None = None,
    ) -> None:
        self.session = session
        self.base = base
        self.auth = auth
        # Shared by every client of the process: one 429 slows every request to that host.
        self.gate = gate or HostGate()
        self._host = urlsplit(base).netloc
        # None: an http endpoint, whose https URLs (a token service) use the system's trust.
        self._ssl = ssl_context
        self._system_trust: ssl.SSLContext | None = None
        self._token_exchanges: SingleFlight[_TokenKey, Flight[HttpResponse]] = SingleFlight()

    async def request(
        self,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...],
        data: Body = None,
        headers: Mapping[str, str] | None = None,
        scopes: Sequence[str] = (),
    ) -> HttpResponse:
        """One protocol request, authenticated; an answer outside ``ok`` raises a RegistryError."""
        flow = self.auth.flow(HttpRequest(method, url, dict(headers or {})), scopes)
        final = await self.run(flow, data)
        if final.status not in ok:
            raise protocol.decode_error(
                final.status,
                final.body,
                method=method,
                url=_without_query(url),
                retry_after=_retry_after(final),
            )
        return final

    async def run(self, flow: Generator[HttpRequest, HttpResponse, T], body: Body = None) -> T:
        """Drive a pure flow: send what it yields, hand it each answer, return what it returns."""
        outgoing = next(flow)
        while True:
            response = await self._send(outgoing, body)
            try:
                outgoing = flow.send(response)
            except StopIteration as done:
                return cast(T, done.value)

    async def _send(self, request: HttpRequest, caller_body: Body) -> HttpResponse:
        if request.is_token_request:
            return await self._shared_token_exchange(request)
        return await self._exchange(request, caller_body)

    async def _shared_token_exchange(self, request: HttpRequest) -> HttpResponse:
        """Flows that ask the token server the same question at once share one answer: the
        layers of a push start together and would otherwise each fetch the same token."""
        key = (request.method, request.url, request.body, tuple(sorted(request.headers.items())))

        def start() -> Flight[HttpResponse]:
            return Flight(
                self._exchange(request, None), name=f"token {_without_query(request.url)}"
            )

        exchange = await self._token_exchanges.join(key, start)
        return await exchange.result()

    async def _ssl_for(self, url: str) -> ssl.SSLContext | bool:
        """The context for ``url``: for anything but plain http, always one of Hoist's own."""
        if self._ssl is not None:
            return self._ssl
        if url.startswith("http://") or urlsplit(url).scheme == "http":
            return True  # aiohttp makes no TLS connection
        if self._system_trust is None:
            self._system_trust = await anyio.to_thread.run_sync(tls.system_trust)
        return self._system_trust

    async def _exchange(self, request: HttpRequest, caller_body: Body) -> HttpResponse:
        own_body = request.body is None and not request.is_token_request
        body = caller_body if own_body else request.body
        if body is not None and not isinstance(body, bytes):
            body = _retrieving_writer_failure(body)
        await self.gate.wait(self._host)
        try:
            async with self.session.request(
                request.method,
                request.url,
                data=_payload(body),
                headers=request.headers,
                allow_redirects=False,
                ssl=await self._ssl_for(request.url),
                # A layer's body waits for "100 Continue": a refusal (401, 429, 5xx) then
                # costs one round trip instead of the whole body.
                expect100=_worth_a_continue(body),
            ) as response:
                answer = HttpResponse(response.status, response.headers, await response.read())
        except NETWORK_ERRORS as exc:
            url = _without_query(request.url)
            raise TransportError(
                f"{request.method} {url}: {_network_failure(exc)}", method=request.method, url=url
            ) from exc
        url = _without_query(request.url)
        log.debug("http", method=request.method, url=url, status=answer.status)
        delay = _retry_after(answer)
        if delay is not None and answer.status in (429, 503):
            # One host's "slow down" holds every request to it, not just the refused one.
            self.gate.hold_for(self._host, delay)
        return answer

    async def ping(self) -> HttpResponse:
        """``GET /v2/``: 200, or 401 with a challenge, both mean a registry is there."""
        url = protocol.ping_url(self.base)
        answer = await self._send(HttpRequest("GET", url, {}), None)
        if answer.status == 401:
            self.auth.observe_challenge(answer)
        elif answer.status != 200:
            raise protocol.decode_error(answer.status, answer.body, method="GET", url=url)
        return answer

    async def head_blob(self, repository: str, digest: Digest) -> int | protocol.Absence:
        """``HEAD`` a blob: its size when the repository has it, else why not.

        Registries on object storage redirect blob requests; the redirect is followed once
        (without credentials when it leaves the registry's origin: the auth flow sees to that).
        """
        url = protocol.blob_url(self.base, repository, digest)
        scopes = [repository_scope(repository)]
        answer = await self.request("HEAD", url, ok=(200, 404, *REDIRECTS), scopes=scopes)
        if answer.status in REDIRECTS:
            target = protocol.resolve_location(url, answer.headers.get("Location"))
            answer = await self.request("HEAD", target, ok=(200, 404), scopes=scopes)
        if answer.status == 404:
            return protocol.Absence.MISSING
        size = protocol.present_size(answer.headers, digest)
        if size is None:
            log.info(
                "a HEAD answer that is not the blob",
                url=url,
                type=answer.headers.get("Content-Type"),
            )
            return protocol.Absence.UNPROVEN
        return size

    async def initiate_upload(self, repository: str) -> UploadSession:
        """``POST`` an upload session."""
        url = protocol.uploads_url(self.base, repository)
        answer = await self.request(
            "POST",
            url,
            ok=(202,),
            headers={"Content-Length": "0"},
            scopes=[repository_scope(repository)],
        )
        return _session(url, answer)

    async def upload_status(self, repository: str, location: str) -> UploadStatus | None:
        """``GET`` the session: how much the registry kept; None when its ``Range`` cannot be
        told apart (what an error answer means, a lost session among them, retry.py decides)."""
        answer = await self.request(
            "GET", location, ok=(204,), scopes=[repository_scope(repository)]
        )
        offset = protocol.committed_offset(answer.headers.get("Range"))
        if offset is None:
            return None
        given = answer.headers.get("Location") or location
        return UploadStatus(protocol.resolve_location(location, given), offset)

    async def mount_blob(
        self, repository: str, digest: Digest, source: str | None
    ) -> UploadSession | None:
        """``POST ?mount=&from=``: None when mounted (201), else the session it opened (202).

        Without ``source`` it is the OCI 1.1 anonymous mount: the registry looks everywhere.
        """
        params = {"mount": str(digest)}
        if source is not None:
            params["from"] = source
        url = protocol.with_query(protocol.uploads_url(self.base, repository), **params)
        answer = await self.request(
            "POST",
            url,
            ok=(201, 202),
            headers={"Content-Length": "0"},
            scopes=[repository_scope(repository)],
        )
        if answer.status == 201:
            return None
        return _session(url, answer)

    async def patch_blob(
        self,
        repository: str,
        location: str,
        body: AsyncIterable[bytes],
        length: int | None = None,
    ) -> str:
        """Stream ``body`` into the session in one ``PATCH``; the session's next location.

        With its ``length`` known the body goes with a Content-Length rather than in chunked
        transfer encoding: no framing per piece to write, nor for the registry to undo."""
        headers = {"Content-Type": "application/octet-stream"}
        if length is not None:
            headers["Content-Length"] = str(length)
        answer = await self.request(
            "PATCH",
            location,
            ok=(202,),
            data=body,
            headers=headers,
            scopes=[repository_scope(repository)],
        )
        return protocol.resolve_location(location, answer.headers.get("Location"))

    async def patch_chunk(self, repository: str, location: str, chunk: bytes, start: int) -> str:
        """One chunk at ``start`` (``Content-Range``); the session's next location."""
        answer = await self.request(
            "PATCH",
            location,
            ok=(202,),
            data=chunk,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": protocol.content_range(start, len(chunk)),
            },
            scopes=[repository_scope(repository)],
        )
        return protocol.resolve_location(location, answer.headers.get("Location"))

    async def commit_blob(
        self, repository: str, location: str, digest: Digest, body: bytes = b""
    ) -> None:
        """``PUT ?digest=``: close the session; the registry checks the digest."""
        await self.request(
            "PUT",
            protocol.commit_url(location, digest),
            ok=(201,),
            data=body,
            headers={"Content-Type": "application/octet-stream"},
            scopes=[repository_scope(repository)],
        )

    async def cancel_upload(self, repository: str, location: str) -> None:
        """``DELETE`` an upload session that will not be committed."""
        await self.request("DELETE", location, ok=(204, 404), scopes=[repository_scope(repository)])

    async def head_manifest(self, repository: str, digest: Digest, media_type: str) -> bool:
        """``HEAD`` a manifest by digest: whether the repository holds it. ``Accept`` names its
        type: Distribution hides an OCI manifest from a client that does not accept OCI."""
        answer = await self.request(
            "HEAD",
            protocol.manifest_url(self.base, repository, str(digest)),
            ok=(200, 404),
            headers={"Accept": media_type},
            scopes=[repository_scope(repository)],
        )
        return answer.status == 200 and protocol.names_digest(answer.headers, digest)

    async def put_manifest(
        self, repository: str, reference: str, media_type: str, data: bytes
    ) -> Digest:
        """``PUT`` a manifest by tag; the digest the registry gives it."""
        answer = await self.request(
            "PUT",
            protocol.manifest_url(self.base, repository, reference),
            ok=(201,),
            data=data,
            headers={"Content-Type": media_type},
            scopes=[repository_scope(repository)],
        )
        given = answer.headers.get(protocol.CONTENT_DIGEST_HEADER)
        return Digest.parse(given) if given else Digest.of(data)


async def _retrieving_writer_failure(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``body``, iterated by aiohttp's body-writer task, which is told to retrieve its own failure.

    A peer that answers or resets while the last marker of a chunked body is being written fails
    that task after the request itself has already ended (with the answer, or with an error this
    client handles); nobody waits for the task then, and asyncio would print "Task exception was
    never retrieved" with a traceback.
    """
    writer = asyncio.current_task()
    if writer is not None:
        writer.add_done_callback(_retrieve)
    async for chunk in body:
        yield chunk


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _payload(body: Body) -> Body | _WholeBody:
    """What aiohttp is handed: bytes over its limit for a raw body as a ``_WholeBody``."""
    if isinstance(body, bytes) and len(body) > RAW_BODY_MAX:
        return _WholeBody(body)
    return body


class _WholeBody(aiohttp.Payload):
    """A body held whole in memory (a small blob, up to ``upload.SMALL_BLOB_SIZE``), handed to
    the connection in one write.

    aiohttp warns of raw bytes over 1 MiB (a write that may hold the loop) and suggests a
    ``BytesIO``, whose payload copies the buffer on the loop, then writes it in 64 KiB slices,
    each copied again: about 6 % of the loop's time in a batch of 1 MiB layers. One write of a
    couple of MiB copies nothing the socket takes at once (on loopback, most of it); the
    transport keeps the rest until it drains.
    """

    _value: bytes

    def __init__(self, value: bytes) -> None:
        super().__init__(value, content_type="application/octet-stream")
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await writer.write(self._value)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        whole = content_length is None or content_length >= len(self._value)
        await writer.write(self._value if whole else memoryview(self._value)[:content_length])


def _worth_a_continue(body: Body) -> bool:
    """Streams and large bodies: waiting for "100 Continue" is cheaper than sending them twice."""
    if body is None:
        return False
    return not isinstance(body, bytes) or len(body) > EXPECT_CONTINUE_ABOVE


def _network_failure(exc: BaseException) -> str:
    """What went wrong on the wire, in words: aiohttp's own text of a refused connection
    carries its TLS setting (``ssl:default``, or a context's repr), which says nothing here."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _retry_after(answer: HttpResponse) -> float | None:
    value = answer.headers.get("Retry-After")
    return parse_retry_after(value, time.time()) if value else None


def _session(url: str, answer: HttpResponse) -> UploadSession:
    return UploadSession(
        protocol.resolve_location(url, answer.headers.get("Location")),
        protocol.chunk_min_length(answer.headers),
    )


def _without_query(url: str) -> str:
    """Upload URLs carry signed state in their query: long, and nobody's business in a log."""
    return url.partition("?")[0]
