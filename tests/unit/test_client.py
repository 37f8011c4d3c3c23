"""The HTTP client against small in-process servers on loopback: redirects and the 429 gate.

These are stand-ins for behaviour the local CNCF Distribution does not show (object-storage
redirects) or shows only under a fault proxy; the push path itself is tested against the real
registry in tests/integration.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from engine.digest import Digest
from engine.errors import TransportError
from engine.registry.api import blob_size
from engine.registry.auth import Authenticator, HttpRequest, HttpResponse
from engine.registry.auth_config import AuthConfig
from engine.registry.client import RegistryClient
from engine.registry.throttle import HostGate

pytestmark = pytest.mark.anyio

DIGEST = Digest("sha256:" + "cd" * 32)


@dataclass
class Seen:
    authorizations: dict[str, list[str | None]] = field(default_factory=dict)

    def record(self, where: str, request: web.Request) -> None:
        self.authorizations.setdefault(where, []).append(request.headers.get("Authorization"))


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[str, str, Seen]]:
    """A registry that wants Basic auth and redirects blob HEADs to a storage host."""
    seen = Seen()
    storage = web.Application()

    async def blob_in_storage(request: web.Request) -> web.Response:
        seen.record("storage", request)
        return web.Response(headers={"Content-Length": "4242"})

    storage.router.add_route("HEAD", "/bucket/blob", blob_in_storage)
    storage_runner, storage_url = await _serve(storage)

    registry = web.Application()

    async def ping(request: web.Request) -> web.Response:
        seen.record("registry", request)
        if request.headers.get("Authorization") is None:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return web.Response()

    async def head_blob(request: web.Request) -> web.Response:
        seen.record("registry", request)
        if request.headers.get("Authorization") is None:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return web.Response(status=307, headers={"Location": f"{storage_url}/bucket/blob"})

    registry.router.add_get("/v2/", ping)
    registry.router.add_route("HEAD", "/v2/{name:.*}/blobs/{digest}", head_blob)
    registry_runner, registry_url = await _serve(registry)
    yield registry_url, storage_url, seen
    await registry_runner.cleanup()
    await storage_runner.cleanup()


async def test_a_redirected_head_is_followed_without_credentials(
    servers: tuple[str, str, Seen], anyio_backend: str
) -> None:
    registry_url, _, seen = servers
    auth = Authenticator(AuthConfig(username="u", password="secret"), origin=registry_url)
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(session, registry_url, auth=auth)
        await client.ping()

        size = await blob_size(client, "app", DIGEST)

    assert size == 4242
    assert any(a and a.startswith("Basic ") for a in seen.authorizations["registry"])
    assert seen.authorizations["storage"] == [None], "credentials followed the redirect"


async def test_a_429_holds_every_request_to_that_host(anyio_backend: str) -> None:
    answered: list[int] = []
    app = web.Application()

    async def busy(request: web.Request) -> web.Response:
        status = 429 if not answered else 404
        answered.append(status)
        return web.Response(status=status, headers={"Retry-After": "7"})

    app.router.add_route("HEAD", "/v2/{name:.*}/blobs/{digest}", busy)
    runner, url = await _serve(app)
    slept: list[float] = []
    now = [100.0]

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    gate = HostGate(clock=lambda: now[0], sleep=fake_sleep)
    try:
        async with aiohttp.ClientSession() as session:
            client = RegistryClient(session, url, auth=Authenticator(AuthConfig()), gate=gate)
            with pytest.raises(Exception, match="toomanyrequests"):
                await blob_size(client, "app", DIGEST)
            assert await blob_size(client, "other", DIGEST) is None
    finally:
        await runner.cleanup()

    assert answered == [429, 404]
    assert slept and sum(slept) == pytest.approx(7, abs=0.01)


def _bearer_registry(
    token: Callable[[web.Request], Awaitable[web.Response]],
    on_refusal: Callable[[web.Request], None] = lambda request: None,
) -> web.Application:
    """Blob HEADs refused (401, a Bearer challenge) without the token "T", 404 with it; ``token``
    answers at ``/token``."""

    async def head_blob(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer T":
            on_refusal(request)
            challenge = f'Bearer realm="{request.url.origin()}/token",service="reg"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("HEAD", "/v2/{name:.*}/blobs/{digest}", head_blob)
    app.router.add_get("/token", token)
    return app


def _bearer_client(session: aiohttp.ClientSession, url: str) -> RegistryClient:
    auth = Authenticator(AuthConfig(username="u", password="p"), origin=url)
    return RegistryClient(session, url, auth=auth)


async def test_concurrent_requests_share_one_token_fetch(anyio_backend: str) -> None:
    """Six requests refused at once ask the token server the same thing: it is asked once."""
    concurrent = 6
    refused: list[str] = []
    all_refused = asyncio.Event()
    token_fetches: list[str | None] = []

    def refusal(request: web.Request) -> None:
        refused.append(request.path)
        if len(refused) == concurrent:
            all_refused.set()

    async def token(request: web.Request) -> web.Response:
        token_fetches.append(request.query.get("scope"))
        # Held until every request has been refused: each flow then wants a token at once.
        await asyncio.wait_for(all_refused.wait(), timeout=30)
        return web.json_response({"token": "T"})

    runner, url = await _serve(_bearer_registry(token, refusal))
    try:
        async with aiohttp.ClientSession() as session:
            client = _bearer_client(session, url)
            sizes = await asyncio.gather(
                *(blob_size(client, "app", DIGEST) for _ in range(concurrent))
            )
    finally:
        await runner.cleanup()

    assert sizes == [None] * concurrent
    assert len(refused) == concurrent
    assert token_fetches == ["repository:app:push,pull"]


async def test_a_token_fetch_nobody_waits_for_is_dropped(anyio_backend: str) -> None:
    """Every request waiting on a shared token fetch is cancelled: the fetch goes too, and the
    next request asks the token server anew instead of joining an answer that never comes."""
    token_fetches: list[int] = []
    first_fetch_arrived, server_stops = asyncio.Event(), asyncio.Event()

    async def token(request: web.Request) -> web.Response:
        token_fetches.append(len(token_fetches) + 1)
        if len(token_fetches) == 1:
            first_fetch_arrived.set()
            await server_stops.wait()  # the first fetch is not answered while the client waits
        return web.json_response({"token": "T"})

    runner, url = await _serve(_bearer_registry(token))
    try:
        async with aiohttp.ClientSession() as session:
            client = _bearer_client(session, url)
            waiting = [asyncio.ensure_future(blob_size(client, "app", DIGEST)) for _ in range(3)]
            await asyncio.wait_for(first_fetch_arrived.wait(), timeout=30)
            for request in waiting:
                request.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)

            assert await asyncio.wait_for(blob_size(client, "app", DIGEST), timeout=30) is None
    finally:
        server_stops.set()
        await runner.cleanup()

    assert token_fetches == [1, 2]


class _SpySession:
    """Records how each request would be sent (its URL and keyword arguments), and sends nothing."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def request(self, method: str, url: str, **kwargs: object) -> None:
        self.seen.append((url, kwargs))
        raise aiohttp.ClientConnectionError("not sent")


def _spied_client(session: _SpySession) -> RegistryClient:
    return RegistryClient(
        session,  # type: ignore[arg-type]
        "http://127.0.0.1:5000",
        auth=Authenticator(AuthConfig()),
    )


def _one_request(url: str, *, token: bool) -> Generator[HttpRequest, HttpResponse, HttpResponse]:
    return (yield HttpRequest("GET", url, {}, is_token_request=token))


@pytest.mark.anyio
async def test_https_requests_never_reach_aiohttps_default_context(anyio_backend: str) -> None:
    # The command line imports aiohttp with default contexts that trust no CA (cli.py): every
    # https request, even from a client of an http endpoint (a token service, a redirect), must
    # carry a verifying context of Hoist's own, never ``ssl=True``.
    session = _SpySession()
    client = _spied_client(session)
    urls = [
        "HTTPS://auth.invalid/token",
        "https://storage.invalid/blob",
        "http://127.0.0.1:5000/v2/",
    ]
    for url, token in zip(urls, [True, False, False], strict=True):
        with pytest.raises(TransportError):
            await client.run(_one_request(url, token=token))
    contexts = [kwargs["ssl"] for _, kwargs in session.seen]
    assert [type(c) for c in contexts] == [ssl.SSLContext, ssl.SSLContext, bool]
    assert all(c.verify_mode is ssl.CERT_REQUIRED and c.check_hostname for c in contexts[:2])
    assert contexts[2] is True  # plain http: no TLS connection at all


async def _stream() -> AsyncIterator[bytes]:
    yield b"layer"


@pytest.mark.anyio
async def test_a_layer_body_waits_for_100_continue(anyio_backend: str) -> None:
    # A refused layer body (a 401, a 429, a fault) must cost a round trip, not the body: the
    # reliability tests bound the bytes a push may send twice.
    session = _SpySession()
    client = _spied_client(session)
    url = "http://127.0.0.1:5000/v2/app/blobs/uploads/1"
    for body in (None, b"{}", b"x" * (2 << 20), _stream()):
        with pytest.raises(TransportError):
            await client.request("PUT", url, ok=(201,), data=body)
    assert [kwargs["expect100"] for _, kwargs in session.seen] == [False, False, True, True]


@pytest.mark.anyio
async def test_a_failed_connection_names_its_request_in_plain_words(anyio_backend: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"https://127.0.0.1:{port}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    async with aiohttp.ClientSession() as session:
        auth = Authenticator(AuthConfig())
        client = RegistryClient(session, base, auth=auth, ssl_context=context)
        with pytest.raises(TransportError) as raised:
            await client.ping()
    assert (raised.value.method, raised.value.url) == ("GET", f"{base}/v2/")
    assert str(raised.value).startswith(f"GET {base}/v2/: cannot connect")
    assert "SSLContext" not in str(raised.value) and "object at" not in str(raised.value)
