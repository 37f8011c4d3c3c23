"""The HTTP side of the Distribution API: aiohttp carries bytes; protocol.py decides.

One ``RegistryClient`` talks to one endpoint (scheme + host) through a shared keep-alive pool.
Each method is one protocol step, named as the spec names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass

import aiohttp
import structlog

from engine.digest import Digest
from engine.errors import TransportError
from engine.registry import protocol

log = structlog.get_logger("engine.registry")

#: Socket errors that say the endpoint cannot be reached (and another one may be tried).
NETWORK_ERRORS = (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


class RegistryClient:
    """The protocol steps against one endpoint, e.g. ``http://127.0.0.1:5000``."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, *, verify_tls: bool = True
    ) -> None:
        self.session = session
        self.base = base
        # aiohttp verifies by default; False is only ever set for an insecure registry.
        self._ssl = verify_tls

    async def request(
        self,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...],
        data: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send one request; an answer outside ``ok`` becomes a typed RegistryError."""
        try:
            async with self.session.request(
                method, url, data=data, headers=headers, allow_redirects=False, ssl=self._ssl
            ) as response:
                body = await response.read()
                answer = Answer(response.status, response.headers, body, str(response.url))
                reason = response.reason or ""
        except NETWORK_ERRORS as exc:
            raise TransportError(f"{method} {url}: {exc or type(exc).__name__}") from exc
        log.debug("http", method=method, url=url, status=answer.status)
        if answer.status not in ok:
            raise protocol.decode_error(
                answer.status, answer.body, method=method, url=url, reason=reason
            )
        return answer

    async def ping(self) -> Answer:
        """``GET /v2/``: 200, or 401 with a challenge, both mean a registry is there."""
        return await self.request("GET", protocol.ping_url(self.base), ok=(200, 401))

    async def check_blob(self, repository: str, digest: Digest) -> int | None:
        """``HEAD`` a blob: its size when the repository has it, None when it does not."""
        answer = await self.request(
            "HEAD", protocol.blob_url(self.base, repository, digest), ok=(200, 404)
        )
        if answer.status == 404:
            return None
        return int(answer.headers.get("Content-Length", "0"))

    async def initiate_upload(self, repository: str) -> str:
        """``POST`` an upload session; its location."""
        url = protocol.uploads_url(self.base, repository)
        answer = await self.request("POST", url, ok=(202,), headers={"Content-Length": "0"})
        return protocol.resolve_location(url, answer.headers.get("Location"))

    async def patch_blob(self, location: str, body: AsyncIterable[bytes]) -> str:
        """Stream ``body`` into the session in one ``PATCH``; the session's next location."""
        answer = await self.request(
            "PATCH",
            location,
            ok=(202,),
            data=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        return protocol.resolve_location(location, answer.headers.get("Location"))

    async def commit_blob(self, location: str, digest: Digest, body: bytes = b"") -> None:
        """``PUT ?digest=``: close the session; the registry checks the digest."""
        await self.request(
            "PUT",
            protocol.commit_url(location, digest),
            ok=(201,),
            data=body,
            headers={"Content-Type": "application/octet-stream"},
        )

    async def cancel_upload(self, location: str) -> None:
        """``DELETE`` an upload session that will not be committed."""
        await self.request("DELETE", location, ok=(204, 404))

    async def put_blob(self, repository: str, digest: Digest, data: bytes) -> None:
        """A small blob in two requests: ``POST``, then ``PUT`` with the body."""
        location = await self.initiate_upload(repository)
        await self.commit_blob(location, digest, data)

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
        )
        given = answer.headers.get(protocol.CONTENT_DIGEST_HEADER)
        return Digest.parse(given) if given else Digest.of(data)
