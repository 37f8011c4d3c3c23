"""Connected registries: one keep-alive pool for the process, one chosen endpoint per host.

For each registry domain: its credentials (config.json, a helper, or what a re-login gave), its
TLS context (certs.d), and the first push endpoint that answers ``/v2/`` — https first; http only
for an insecure registry and only when https could not even be spoken. Concurrent pushes to a
domain share one connection attempt (a ``SingleFlight``); anyio runs the blocking TLS set-up in
a thread.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio.to_thread

from engine import logs
from engine.concurrency import Flight, SingleFlight, join_shielded, retrieve
from engine.errors import RegistryError, TransportError
from engine.registry import tls
from engine.registry.auth import Authenticator
from engine.registry.auth_config import AuthConfig
from engine.registry.client import RegistryClient
from engine.registry.endpoints import Endpoint, push_endpoints
from engine.registry.throttle import HostGate
from engine.settings import CONNECTIONS
from engine.version import VERSION

log = logs.get_logger("engine.registry")

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
        connections: int = CONNECTIONS,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.insecure_registries = tuple(insecure_registries)
        self.insecure_loopback = insecure_loopback
        self._credentials = credentials
        self._certs_dirs = list(certs_dirs) if certs_dirs is not None else tls.certs_dirs()
        self._connections = connections
        self.timeouts = timeouts or Timeouts()
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, RegistryClient] = {}
        # Concurrent pushes to one registry share one connection attempt.
        self._connecting: SingleFlight[str, Flight[RegistryClient]] = SingleFlight()
        # Bumped by a re-login: a connection made with the credentials before is not kept.
        self._generation: dict[str, int] = {}
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
        for flight in self._connecting.flights():
            flight.task.cancel()
            await join_shielded(flight.task)
            retrieve(flight.task)
        self._clients.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def close_abandoned(self) -> bool:
        """Close the connections of a pool its owner never closed, without a loop (garbage
        collection); whether there were any. Flights cannot run on: their loop is gone or idle."""
        session, self._session = self._session, None
        if session is None or session.closed:
            return False
        connector = session.connector
        session.detach()
        if connector is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing left to close
                connector.close()
        return True

    def use_credentials(self, domain: str, credentials: AuthConfig) -> None:
        """Credentials for ``domain`` from now on (a re-login); its tokens are dropped."""
        self._given[domain] = credentials
        self._clients.pop(domain, None)
        self._connecting.forget(domain)
        self._generation[domain] = self._generation.get(domain, 0) + 1

    async def credentials(self, domain: str) -> AuthConfig:
        given = self._given.get(domain)
        return given if given is not None else await self._credentials(domain)

    async def client(self, domain: str) -> RegistryClient:
        """A client for ``domain`` on the first of its push endpoints that answers ``/v2/``."""
        client = self._clients.get(domain)
        if client is not None:
            return client

        def start() -> Flight[RegistryClient]:
            return Flight(self._connect(domain), name=f"connect {domain}")

        return await (await self._connecting.join(domain, start)).result()

    async def _connect(self, domain: str) -> RegistryClient:
        generation = self._generation.get(domain, 0)
        client = await self.connect(domain, await self.credentials(domain))
        if self._generation.get(domain, 0) == generation:
            self._clients[domain] = client
        return client

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
