"""The recording, fault-injecting proxy, in front of a real registry.

Clients are ``http.client`` (every byte under the test's control), a raw socket (to tell a reset
from a clean close) and ``skopeo`` (a real push client). What the registry saw is read back from
the registry itself: upload status, blob commits that check the digest, upload files on disk.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import hashlib
import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import anyio
import anyio.to_thread
import pytest

from tests.support.clients import Skopeo
from tests.support.proxy import Exchange, Fault, FaultPlan, Proxy, running_proxy, start_proxy
from tests.support.registry import LocalRegistry
from tests.support.sample import LayerSpec, write_oci_layout

pytestmark = pytest.mark.integration

KiB = 1024
#: How long a test waits for something the proxy is bound to do; never a measured duration.
PATIENCE = 30.0


def _body(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _connect(proxy: Proxy, timeout: float = PATIENCE) -> http.client.HTTPConnection:
    host, port = proxy.host.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def _call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    chunked = body is not None and not isinstance(body, bytes)
    if method in ("POST", "PUT") and body is None:
        body = b""
    conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
    answer = conn.getresponse()
    return answer, answer.read()


def _path(location: str) -> str:
    parts = urlsplit(location)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _start_upload(conn: http.client.HTTPConnection, proxy: Proxy, repository: str) -> str:
    """POST a new upload session; its location's path. The location must name the proxy."""
    answer, _ = _call(conn, "POST", f"/v2/{repository}/blobs/uploads/")
    assert answer.status == 202
    location = answer.headers["Location"]
    assert urlsplit(location).netloc == proxy.host
    return _path(location)


def _upload_uuid(path: str) -> str:
    return urlsplit(path).path.rstrip("/").rsplit("/", 1)[1]


def _upload_data(registry: LocalRegistry, repository: str, path: str) -> Path:
    """Where Distribution's filesystem driver keeps the bytes of an upload in progress."""
    repositories = registry.storage / "docker" / "registry" / "v2" / "repositories"
    return repositories / repository / "_uploads" / _upload_uuid(path) / "data"


def _upload_status(registry: LocalRegistry, path: str) -> tuple[int, str | None]:
    """Ask the registry itself, not through the proxy, where an upload stands."""
    host, port = registry.host.rsplit(":", 1)
    direct = http.client.HTTPConnection(host, int(port), timeout=PATIENCE)
    try:
        answer, _ = _call(direct, "GET", path)
        return answer.status, answer.headers.get("Range")
    finally:
        direct.close()


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "the proxy did not get there in time"
        time.sleep(0.01)


def _only(proxy: Proxy, method: str) -> Exchange:
    [exchange] = proxy.exchanges(method)
    return exchange


# --- faithful forwarding ------------------------------------------------------------------------


def test_forwards_an_upload_on_one_connection_and_counts_body_bytes(
    registry: LocalRegistry,
) -> None:
    repository = "proxytest/forward"
    fixed, streamed = _body(700 * KiB + 3, 1), _body(1100 * KiB + 5, 2)
    blob = fixed + streamed
    with running_proxy(registry.host) as proxy:
        conn = _connect(proxy)
        seen: list[int] = []
        path = _start_upload(conn, proxy, repository)
        first_socket = conn.sock
        seen.append(202)
        answer, _ = _call(conn, "PATCH", path, fixed)
        seen.append(answer.status)
        # Chunked, in uneven pieces: the count is of payload, not of chunk framing.
        pieces = (streamed[i : i + 65_537] for i in range(0, len(streamed), 65_537))
        answer, _ = _call(conn, "PATCH", _path(answer.headers["Location"]), pieces)
        seen.append(answer.status)
        assert answer.headers["Range"] == f"0-{len(blob) - 1}"
        # The registry checks the digest: it got every byte, unchanged.
        commit = f"{_path(answer.headers['Location'])}&digest={_digest(blob)}"
        answer, _ = _call(conn, "PUT", commit)
        seen.append(answer.status)
        head, head_body = _call(conn, "HEAD", f"/v2/{repository}/blobs/{_digest(blob)}")
        seen.append(head.status)
        get, got = _call(conn, "GET", f"/v2/{repository}/blobs/{_digest(blob)}")
        seen.append(get.status)
        same_connection = conn.sock is first_socket
        conn.close()

    assert seen == [202, 202, 202, 201, 200, 200]
    assert head.headers["Content-Length"] == str(len(blob)) and head_body == b""
    assert got == blob
    assert same_connection, "keep-alive: every request went over the first connection"
    assert [e.method for e in proxy.log] == ["POST", "PATCH", "PATCH", "PUT", "HEAD", "GET"]
    assert [e.status for e in proxy.log] == seen
    assert [e.request_body_bytes for e in proxy.exchanges("PATCH")] == [len(fixed), len(streamed)]
    assert proxy.body_bytes("PATCH") == len(blob) == proxy.body_bytes(path_contains="/uploads/")
    assert proxy.body_bytes("PATCH", path_contains="/no/such/") == 0
    assert all(e.forwarded_body_bytes == e.request_body_bytes for e in proxy.log)
    assert _only(proxy, "GET").response_body_bytes == len(blob)
    assert _only(proxy, "HEAD").response_body_bytes == 0
    assert all(e.fault is None and e.finished for e in proxy.log)
    assert all(e.started_at <= e.finished_at for e in proxy.log if e.finished_at is not None)
    assert proxy.errors == []


def test_skopeo_pushes_through_the_proxy_and_every_blob_byte_is_counted(
    registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    image = write_oci_layout(layout, [LayerSpec(300 * KiB, 11), LayerSpec(1024 * KiB, 12)])
    blobs = layout / "blobs" / "sha256"
    layer_bytes = sum((blobs / digest.hex).stat().st_size for digest in image.layer_digests)
    with running_proxy(registry.host) as proxy:
        copied = skopeo.run(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{layout}:latest",
            f"docker://{proxy.host}/proxytest/skopeo:1",
        )
    assert copied.returncode == 0, copied.stderr

    stored = skopeo.raw_manifest(f"{registry.host}/proxytest/skopeo:1")
    assert stored == image.manifest
    assert proxy.body_bytes(path_contains="/blobs/uploads/") == layer_bytes + len(image.config)
    assert proxy.body_bytes("PUT", "/manifests/1") == len(stored)
    assert proxy.body_bytes() == layer_bytes + len(image.config) + len(stored)
    assert all(e.fault is None for e in proxy.log)
    assert proxy.errors == []


# --- status faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_status_fault_answers_without_forwarding_and_the_session_survives(
    registry: LocalRegistry, status: int
) -> None:
    repository = f"proxytest/status-{status}"
    body = _body(200 * KiB, status)
    plan = FaultPlan(schedule={0: Fault("status", status=status)}, methods={"PATCH"}, retry_after=7)
    with running_proxy(registry.host, faults=plan) as proxy:
        conn = _connect(proxy)
        path = _start_upload(conn, proxy, repository)
        refused, error_body = _call(conn, "PATCH", path, body)
        # Same connection: the fault drained the body, so the connection stays usable.
        accepted, _ = _call(conn, "PATCH", path, body)
        conn.close()

    assert refused.status == status
    assert refused.headers.get("Retry-After") == ("7" if status == 429 else None)
    if status == 429:
        assert json.loads(error_body)["errors"][0]["code"] == "TOOMANYREQUESTS"
    # The registry never saw the refused body: the same location takes it from offset 0.
    assert accepted.status == 202
    assert accepted.headers["Range"] == f"0-{len(body) - 1}"
    faulted, forwarded = proxy.exchanges("PATCH")
    assert faulted.fault is not None and faulted.fault.kind == "status"
    assert (faulted.status, faulted.request_body_bytes, faulted.forwarded_body_bytes) == (
        status,
        len(body),
        0,
    )
    assert forwarded.fault is None and forwarded.forwarded_body_bytes == len(body)
    assert proxy.body_bytes("PATCH") == 2 * len(body)
    assert proxy.errors == []


def test_429_can_carry_retry_after_as_an_http_date(registry: LocalRegistry) -> None:
    plan = FaultPlan(rates={"status": 1.0}, statuses=(429,), retry_after=3, retry_after_date=True)
    before = time.time()
    with running_proxy(registry.host, faults=plan) as proxy:
        conn = _connect(proxy)
        answer, _ = _call(conn, "GET", "/v2/")
        conn.close()
    assert answer.status == 429
    retry_at = email.utils.parsedate_to_datetime(answer.headers["Retry-After"])
    # Whole seconds, rounded up from the moment of the answer, which came after ``before``.
    assert retry_at.timestamp() >= int(before) + 3
    assert proxy.log[0].fault == Fault("status", 429, 3, True)


# --- resets -------------------------------------------------------------------------------------


def test_reset_after_headers_sends_rst_and_the_registry_never_sees_the_request(
    registry: LocalRegistry,
) -> None:
    repository = "proxytest/reset-headers"
    body = _body(1000, 3)
    plan = FaultPlan(schedule={0: "reset_after_headers"}, methods={"PATCH"})
    with running_proxy(registry.host, faults=plan) as proxy:
        conn = _connect(proxy)
        path = _start_upload(conn, proxy, repository)
        host, port = proxy.host.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=PATIENCE) as raw:
            head = f"PATCH {path} HTTP/1.1\r\nHost: {proxy.host}\r\nContent-Length: {len(body)}\r\n"
            raw.sendall(head.encode() + b"\r\n")
            # RST, not FIN: a clean close would read as b"".
            with pytest.raises(ConnectionResetError):
                raw.recv(1)
        accepted, _ = _call(conn, "PATCH", path, body)
        conn.close()

    assert accepted.status == 202 and accepted.headers["Range"] == f"0-{len(body) - 1}"
    reset, forwarded = proxy.exchanges("PATCH")
    assert reset.fault == Fault("reset_after_headers")
    assert (reset.status, reset.request_body_bytes, reset.forwarded_body_bytes) == (None, 0, 0)
    assert forwarded.fault is None and forwarded.status == 202
    assert proxy.errors == []


def test_reset_mid_body_leaves_part_of_the_body_in_the_registry(registry: LocalRegistry) -> None:
    repository = "proxytest/reset-mid-body"
    body = _body(1024 * KiB, 4)
    plan = FaultPlan(schedule={0: "reset_mid_body"}, methods={"PATCH"})
    with running_proxy(registry.host, seed=5, faults=plan) as proxy:
        conn = _connect(proxy)
        path = _start_upload(conn, proxy, repository)
        with pytest.raises(ConnectionError):
            _call(conn, "PATCH", path, body)
        conn.close()

    exchange = _only(proxy, "PATCH")
    assert exchange.fault is not None and exchange.fault.kind == "reset_mid_body"
    assert exchange.status is None
    assert 0 < exchange.forwarded_body_bytes < len(body)
    assert exchange.forwarded_body_bytes <= exchange.request_body_bytes <= len(body)
    # The registry wrote exactly what was forwarded, and no longer accepts the session (its
    # signed state no longer matches the stored size).
    assert _upload_data(registry, repository, path).stat().st_size == exchange.forwarded_body_bytes
    assert _upload_status(registry, path)[0] != 204
    assert proxy.errors == []


def test_reset_mid_body_of_a_chunked_body_at_an_explicit_offset(registry: LocalRegistry) -> None:
    repository = "proxytest/reset-chunked"
    body = _body(300 * KiB, 5)
    offset = 100_000
    plan = FaultPlan(schedule={0: Fault("reset_mid_body", offset=offset)}, methods={"PATCH"})
    with running_proxy(registry.host, faults=plan) as proxy:
        conn = _connect(proxy)
        path = _start_upload(conn, proxy, repository)
        pieces = (body[i : i + 30_000] for i in range(0, len(body), 30_000))
        with pytest.raises(ConnectionError):
            _call(conn, "PATCH", path, pieces)
        conn.close()

    exchange = _only(proxy, "PATCH")
    assert exchange.forwarded_body_bytes == offset
    assert _upload_data(registry, repository, path).stat().st_size == offset
    assert proxy.errors == []


# --- stall and throttle -------------------------------------------------------------------------


def test_stall_holds_the_answer_while_the_client_waits(registry: LocalRegistry) -> None:
    plan = FaultPlan(schedule={0: "stall"}, stall_seconds=600)
    with running_proxy(registry.host, faults=plan) as proxy:
        impatient = _connect(proxy, timeout=0.5)
        with pytest.raises(TimeoutError):
            _call(impatient, "GET", "/v2/")
        stalled = proxy.log[0]
        # Still held after the client gave up waiting: the stall is far from over.
        assert not stalled.finished and stalled.status is None
        impatient.close()
        # A client that hangs up ends its stall; the proxy serves the next one.
        _wait_for(lambda: stalled.finished)
        conn = _connect(proxy)
        answer, _ = _call(conn, "GET", "/v2/")
        conn.close()
    assert answer.status == 200
    assert stalled.fault == Fault("stall", seconds=600)
    assert proxy.errors == []


def test_stall_closes_without_an_answer_when_its_time_is_up(registry: LocalRegistry) -> None:
    body = _body(50 * KiB, 6)
    plan = FaultPlan(schedule={0: "stall"}, stall_seconds=0.2)
    with running_proxy(registry.host, faults=plan) as proxy:
        conn = _connect(proxy)
        with pytest.raises(http.client.RemoteDisconnected):
            _call(conn, "PUT", "/v2/proxytest/stall/manifests/x", body)
        conn.close()
    stalled = proxy.log[0]
    assert stalled.status is None and stalled.finished_at is not None
    assert stalled.finished_at - stalled.started_at >= 0.2 * 0.9
    # Drained, never forwarded: the registry has no such manifest.
    assert (stalled.request_body_bytes, stalled.forwarded_body_bytes) == (len(body), 0)
    assert proxy.errors == []


def test_throttle_forwards_the_whole_body_slowly(registry: LocalRegistry) -> None:
    repository = "proxytest/throttle"
    rate = 64 * KiB
    body = _body(96 * KiB, 7)
    plan = FaultPlan(rates={"throttle": 1.0}, methods={"PATCH"}, throttle_rate=rate)
    with running_proxy(registry.host, faults=plan) as proxy:
        conn = _connect(proxy)
        path = _start_upload(conn, proxy, repository)
        answers: list[http.client.HTTPResponse] = []
        sender = threading.Thread(
            target=lambda: answers.append(_call(conn, "PATCH", path, body)[0])
        )
        sender.start()
        _wait_for(lambda: bool(proxy.exchanges("PATCH")))
        exchange = _only(proxy, "PATCH")
        samples = []
        while not exchange.finished:
            samples.append(exchange.forwarded_body_bytes)
            time.sleep(0.01)
        sender.join(PATIENCE)
        conn.close()

    assert [a.status for a in answers] == [202]
    assert answers[0].headers["Range"] == f"0-{len(body) - 1}"
    # Seen part-way: the body went through in steps, not at once.
    assert any(0 < sample < len(body) for sample in samples)
    assert samples == sorted(samples)
    assert exchange.forwarded_body_bytes == len(body)
    assert exchange.finished_at is not None
    assert exchange.finished_at - exchange.started_at >= len(body) / rate * 0.9
    assert exchange.fault == Fault("throttle", rate=rate)
    assert proxy.errors == []


def test_a_client_that_hangs_up_mid_body_gets_no_status(registry: LocalRegistry) -> None:
    """What a cancelled push looks like from the proxy: part of the body, no answer."""
    repository = "proxytest/hang-up"
    body = _body(256 * KiB, 8)
    plan = FaultPlan(rates={"throttle": 1.0}, methods={"PATCH"}, throttle_rate=32 * KiB)
    with running_proxy(registry.host, faults=plan) as proxy:
        conn = _connect(proxy)
        path = _start_upload(conn, proxy, repository)
        host, port = proxy.host.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=PATIENCE) as raw:
            head = f"PATCH {path} HTTP/1.1\r\nHost: {proxy.host}\r\nContent-Length: {len(body)}\r\n"
            raw.sendall(head.encode() + b"\r\n" + body[: 64 * KiB])
            _wait_for(lambda: proxy.body_bytes("PATCH") > 0)
        exchange = _only(proxy, "PATCH")
        _wait_for(lambda: exchange.finished)
        answer, _ = _call(conn, "GET", "/v2/")
        conn.close()

    assert exchange.status is None
    assert 0 < exchange.forwarded_body_bytes <= exchange.request_body_bytes <= 64 * KiB
    assert answer.status == 200
    assert proxy.errors == []


# --- the plan: determinism, filters, caps, replacement --------------------------------------------


def _outcomes(registry: LocalRegistry, seed: int, requests: int) -> list[Fault | None]:
    """Faults drawn for ``requests`` GETs, after checking each against what the client got."""
    plan = FaultPlan(
        rates={"status": 0.3, "reset_after_headers": 0.2}, methods={"GET"}, max_faults=requests
    )
    with running_proxy(registry.host, seed=seed, faults=plan) as proxy:
        for _ in range(requests):
            conn = _connect(proxy)
            try:
                status: int | None = _call(conn, "GET", "/v2/")[0].status
            except ConnectionError:
                status = None
            finally:
                conn.close()
            exchange = proxy.log[-1]
            assert exchange.status == status
            assert (exchange.fault is None) == (status == 200)
    assert proxy.errors == []
    return [exchange.fault for exchange in proxy.log]


def test_the_same_seed_gives_the_same_faults(registry: LocalRegistry) -> None:
    first = _outcomes(registry, seed=7, requests=30)
    again = _outcomes(registry, seed=7, requests=30)
    other = _outcomes(registry, seed=8, requests=30)
    assert first == again
    assert first != other
    kinds = {fault.kind if fault else None for fault in first}
    assert kinds == {None, "status", "reset_after_headers"}


def test_filters_cap_and_replacing_the_plan(registry: LocalRegistry) -> None:
    plan = FaultPlan(rates={"status": 1.0}, statuses=(503,), methods={"GET"}, path=r"^/v2/$")
    capped = dataclasses.replace(plan, max_faults=3)
    with running_proxy(registry.host, faults=capped) as proxy:
        conn = _connect(proxy)
        statuses = [_call(conn, "GET", "/v2/")[0].status for _ in range(5)]
        other = [
            _call(conn, "GET", "/v2/_catalog")[0].status,
            _call(conn, "HEAD", "/v2/")[0].status,
        ]
        applied = proxy.faults_applied
        proxy.clear()
        proxy.faults = FaultPlan(schedule={1: Fault("status", status=500)})
        replaced = [_call(conn, "GET", "/v2/")[0].status for _ in range(3)]
        conn.close()

    assert statuses == [503, 503, 503, 200, 200]
    assert other == [200, 200]
    assert applied == 3
    # A new plan numbers requests from 0 again; clear() emptied the log.
    assert replaced == [200, 500, 200]
    assert [e.status for e in proxy.log] == replaced
    assert proxy.errors == []


# --- lifecycle ----------------------------------------------------------------------------------


def test_stop_ends_stalls_connections_and_the_thread(registry: LocalRegistry) -> None:
    plan = FaultPlan(rates={"stall": 1.0}, stall_seconds=600)
    with running_proxy(registry.host, faults=plan) as proxy:
        host, port = proxy.host.rsplit(":", 1)
        client = socket.create_connection((host, int(port)), timeout=PATIENCE)
        client.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {proxy.host}\r\n\r\n".encode())
        _wait_for(lambda: bool(proxy.log))
    with client:
        # The stall ended with the proxy: the client reads the close, not a status line.
        assert client.recv(1) == b""
    assert not any(thread.name == f"hoist-proxy-{port}" for thread in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=PATIENCE).close()
    assert proxy.log[0].finished and proxy.log[0].status is None
    assert proxy.errors == []


def test_an_unreachable_registry_is_a_502(tmp_path: Path) -> None:
    # A port that nothing listens on: bound, then closed.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    with running_proxy(dead) as proxy:
        conn = _connect(proxy)
        answer, _ = _call(conn, "GET", "/v2/")
        conn.close()
    assert answer.status == 502
    assert [e.status for e in proxy.log] == [502]
    assert proxy.errors == []


def test_counts_many_monolithic_uploads_on_one_connection(registry: LocalRegistry) -> None:
    """Counts hold across many small requests on one connection, empty bodies included."""
    bodies = [b"", *(_body(n, n) for n in itertools.islice(itertools.count(1, 997), 8))]
    with running_proxy(registry.host) as proxy:
        conn = _connect(proxy)
        for body in bodies:
            path = _start_upload(conn, proxy, "proxytest/many")
            answer, _ = _call(conn, "PUT", f"{path}&digest={_digest(body)}", body)
            assert answer.status == 201
        conn.close()
    assert proxy.body_bytes("PUT") == sum(len(body) for body in bodies)
    assert [e.request_body_bytes for e in proxy.exchanges("PUT")] == [len(b) for b in bodies]
    assert proxy.errors == []


def test_subprocess_clients_reach_the_proxy(registry: LocalRegistry) -> None:
    """The proxy's loop runs in its own thread: a blocking child process does not starve it."""
    with running_proxy(registry.host) as proxy:
        url = f"{proxy.url}/v2/"
        fetched = subprocess.run(
            [sys.executable, "-c", f"import urllib.request as u; print(u.urlopen({url!r}).status)"],
            capture_output=True,
            text=True,
            timeout=PATIENCE,
            check=False,
            env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
        )
    assert fetched.stdout.strip() == "200", fetched.stderr
    assert [e.path for e in proxy.log] == ["/v2/"]


def test_bytes_that_are_not_http_get_a_400_at_once(registry: LocalRegistry) -> None:
    """A TLS ClientHello (skopeo tries https first) is refused now, not after a timeout."""
    with running_proxy(registry.host) as proxy:
        host, port = proxy.host.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=PATIENCE) as raw:
            raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            answer = raw.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert proxy.log == []
    assert proxy.errors == []


@pytest.mark.anyio
async def test_aiohttp_streams_through_a_reset_then_a_clean_retry(registry: LocalRegistry) -> None:
    """Hoist's own HTTP client, from an event loop: start and stop go through a worker thread."""
    repository = "proxytest/aiohttp"
    body = _body(600 * KiB, 9)
    plan = FaultPlan(schedule={0: "reset_mid_body"}, methods={"PATCH"})
    proxy = await anyio.to_thread.run_sync(
        functools.partial(start_proxy, registry.host, faults=plan)
    )

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 64 * KiB):
            yield body[i : i + 64 * KiB]

    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{proxy.url}/v2/{repository}/blobs/uploads/") as started:
                assert started.status == 202
            with pytest.raises(aiohttp.ClientError):
                async with session.patch(started.headers["Location"], data=stream()) as answer:
                    await answer.read()
            async with session.post(f"{proxy.url}/v2/{repository}/blobs/uploads/") as restarted:
                location = restarted.headers["Location"]
            async with session.patch(location, data=stream()) as patched:
                assert patched.status == 202
                location = patched.headers["Location"]
            async with session.put(location, params={"digest": _digest(body)}) as committed:
                assert committed.status == 201
    finally:
        await anyio.to_thread.run_sync(proxy.stop)

    reset, clean = proxy.exchanges("PATCH")
    assert 0 < reset.forwarded_body_bytes < len(body) and reset.status is None
    assert clean.fault is None and clean.forwarded_body_bytes == len(body)
    assert proxy.body_bytes("PATCH") == reset.request_body_bytes + len(body)
    assert proxy.errors == []
