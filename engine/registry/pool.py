"""Connected registries: one keep-alive pool for the process, one chosen endpoint per host.

For each registry domain: its credentials (config.json, a helper, or what a re-login gave), its
TLS context (certs.d), and the first push endpoint that answers ``/v2/`` — https first; http only
for an insecure registry and only when https could not even be spoken.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio.to_thread
import structlog

from engine.errors import RegistryError, TransportError
from engine.registry import tls
from engine.registry.auth import Authenticator
from engine.registry.auth_config import AuthConfig
from engine.registry.client import RegistryClient
from engine.registry.endpoints import Endpoint, push_endpoints
from engine.registry.throttle import HostGate
from engine.version import VERSION

log = structlog.get_logger("engine.registry")

USER_AGENT = f"hoist/{VERSION}"

#: Where credentials for a registry domain come from (``DockerConfig.get``, say).
CredentialSource = Callable[[str], Awaitable[AuthConfig]]


@dataclass(frozen=True)
class Timeouts:
    """Seconds: to connect (TLS handshake included), and of silence while reading an answer.

    A stalled connection is noticed after ``read`` seconds and its request tried again.
    """

    connect: float = 30.0
    read: float = 120.0


async def anonymous(domain: str) -> AuthConfig:
    return AuthConfig()


class RegistryPool:
    """A ``RegistryClient`` per registry domain, on the first endpoint that answers."""

    def __init__(
        self,
        *,
        insecure_registries: Iterable[str] = (),
        insecure_loopback: bool = True,
        credentials: CredentialSource = anonymous,
        certs_dirs: Sequence[Path] | None = None,
        connections: int = 32,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.insecure_registries = tuple(insecure_registries)
        self.insecure_loopback = insecure_loopback
        self._credentials = credentials
        self._certs_dirs = list(certs_dirs) if certs_dirs is not None else tls.certs_dirs()
        self._connections = connections
        self.timeouts = timeouts or Timeouts()
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, asyncio.Future[RegistryClient]] = {}
        self._given: dict[str, AuthConfig] = {}
        self._gate = HostGate()
        # Hosts that answered over https once: never tried over http again (Docker's rule).
        self._confirmed_tls: set[str] = set()

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections, enable_cleanup_closed=True)
            timeout = aiohttp.ClientTimeout(
                total=None,
                # connect covers the TLS handshake: a peer that accepts and never answers fails.
                connect=self.timeouts.connect,
                sock_connect=self.timeouts.connect,
                sock_read=self.timeouts.read,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                headers={"User-Agent": USER_AGENT},
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        for connecting in self._clients.values():
            connecting.cancel()
        self._clients.clear()

    def use_credentials(self, domain: str, credentials: AuthConfig) -> None:
        """Credentials for ``domain`` from now on (a re-login); its tokens are dropped."""
        self._given[domain] = credentials
        self._clients.pop(domain, None)

    async def credentials(self, domain: str) -> AuthConfig:
        given = self._given.get(domain)
        return given if given is not None else await self._credentials(domain)

    async def client(self, domain: str) -> RegistryClient:
        """A client for ``domain`` on the first of its push endpoints that answers ``/v2/``.

        Concurrent pushes to one registry share one connection attempt.
        """
        connecting = self._clients.get(domain)
        if connecting is None or _failed(connecting):
            connecting = asyncio.ensure_future(self._connect(domain))
            self._clients[domain] = connecting
        return await asyncio.shield(connecting)

    async def _connect(self, domain: str) -> RegistryClient:
        return await self.connect(domain, await self.credentials(domain))

    async def connect(self, domain: str, credentials: AuthConfig) -> RegistryClient:
        """A new client for ``domain`` with these credentials (``login`` checks them with it)."""
        session = self._open_session()
        last: RegistryError | None = None
        endpoints = push_endpoints(
            domain, self.insecure_registries, loopback_insecure=self.insecure_loopback
        )
        for endpoint in endpoints:
            if endpoint.scheme == "http" and endpoint.host in self._confirmed_tls:
                continue
            client = RegistryClient(
                session,
                endpoint.base,
                auth=Authenticator(credentials, origin=endpoint.base),
                ssl_context=await self._ssl(endpoint),
                gate=self._gate,
            )
            try:
                await client.ping()
            except TransportError as exc:
                # Only a connection that failed may fall back; an answer, even an error, is final.
                log.debug("endpoint unreachable", endpoint=endpoint.base, error=str(exc))
                last = exc
                continue
            if endpoint.scheme == "https":
                self._confirmed_tls.add(endpoint.host)
            return client
        assert last is not None
        raise last

    async def _ssl(self, endpoint: Endpoint) -> ssl.SSLContext | None:
        if endpoint.scheme != "https":
            return None
        host_tls = await anyio.to_thread.run_sync(
            tls.find_host_tls, endpoint.host, self._certs_dirs
        )
        return await anyio.to_thread.run_sync(
            lambda: tls.ssl_context(host_tls, verify=endpoint.verify_tls)
        )


def _failed(future: asyncio.Future[RegistryClient]) -> bool:
    """A connection attempt that ended without a client: the next caller tries again."""
    return future.done() and (future.cancelled() or future.exception() is not None)
