"""Connected registries: one keep-alive pool for the process, one chosen endpoint per host."""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp
import structlog

from engine import __version__
from engine.errors import RegistryError, TransportError
from engine.registry.client import RegistryClient
from engine.registry.endpoints import Endpoint, push_endpoints

log = structlog.get_logger("engine.registry")

USER_AGENT = f"hoist/{__version__}"


class RegistryPool:
    """A ``RegistryClient`` per registry domain, on the first endpoint that answers."""

    def __init__(self, *, insecure_registries: Iterable[str] = (), connections: int = 32) -> None:
        self.insecure_registries = tuple(insecure_registries)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, RegistryClient] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections, enable_cleanup_closed=True)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
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
        self._clients.clear()

    async def client(self, domain: str) -> RegistryClient:
        """A client for ``domain`` on the first of its push endpoints that answers ``/v2/``."""
        if domain not in self._clients:
            self._clients[domain] = await self._connect(domain)
        return self._clients[domain]

    async def _connect(self, domain: str) -> RegistryClient:
        session = self._open_session()
        last: RegistryError | None = None
        for endpoint in push_endpoints(domain, self.insecure_registries):
            client = _client(session, endpoint)
            try:
                await client.ping()
            except TransportError as exc:
                # Only a connection that failed may fall back; a registry's answer is final.
                log.debug("endpoint unreachable", endpoint=endpoint.base, error=str(exc))
                last = exc
                continue
            return client
        assert last is not None
        raise last


def _client(session: aiohttp.ClientSession, endpoint: Endpoint) -> RegistryClient:
    return RegistryClient(session, endpoint.base, verify_tls=endpoint.verify_tls)
