"""A recording, fault-injecting HTTP/1.1 reverse proxy between a client and one registry.

Integration tests put it in front of a real registry (``registry.start_registry``) to count what
goes over the wire and to break things on purpose. It listens on a free loopback port and forwards
every request to one plain-http upstream, byte for byte: the request head as the client sent it
(``Host`` included, so Distribution's ``Location`` URLs point back at the proxy), bodies streamed
in pieces (``Content-Length`` or chunked, never buffered whole), keep-alive on both sides, one
upstream connection per client connection.

Each request is recorded as an ``Exchange``. A ``FaultPlan`` decides, per request and from a
``random.Random(seed)``, whether to inject one of these faults instead of forwarding faithfully:

- ``status``: answer 429 (with ``Retry-After``), 500, 502 or 503 without forwarding. The request
  body is drained and discarded first (so the client always reads the answer and the connection
  stays usable), except when the client waits for ``100 Continue``: then the proxy answers at
  once and closes. The registry never sees the request, so an upload session survives.
- ``reset_after_headers``: read the request head, then reset the connection (RST, SO_LINGER 0).
- ``reset_mid_body``: forward the head and part of the body, then half-close the upstream
  connection (the registry reads that part and sees the body end early) and reset the client's.
- ``stall``: drain the body without forwarding it, answer nothing for N seconds, then close.
- ``throttle``: forward faithfully, but the request body at most N bytes per second.

The proxy runs its own event loop in a thread, so sync tests, async tests and subprocesses can use
it alike. ``start_proxy`` and ``stop`` block (join a thread): from async code, call them through
``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import math
import random
import re
import socket
import string
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = [
    "Exchange",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "Proxy",
    "running_proxy",
    "start_proxy",
]

FaultKind = Literal["status", "reset_after_headers", "reset_mid_body", "stall", "throttle"]
#: The order in which ``FaultPlan.rates`` are laid on [0, 1): fixed, so dict order never matters.
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

#: Bodies are relayed in pieces of at most this size: memory stays flat for any body size.
PIECE_SIZE = 256 << 10
#: The longest request or response head (start line and headers) the proxy accepts.
HEAD_LIMIT = 1 << 20
#: How long a half-closed upstream connection may take to finish after a ``reset_mid_body``.
UPSTREAM_LINGER = 5.0
#: How long ``stop`` waits for the proxy's thread.
STOP_TIMEOUT = 10.0

_END_OF_HEAD = b"\r\n\r\n"
_CRLF = b"\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
#: The bytes a request or response may begin with: a token character, or a stray CRLF.
_HEAD_STARTS = frozenset(
    c.encode() for c in string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~\r\n"
)
#: SO_LINGER on, timeout 0: closing the socket sends RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class MalformedMessageError(Exception):
    """An HTTP message the proxy cannot frame: it closes the connection."""


class _BodyCut(Exception):
    """A ``reset_mid_body`` fault reached its offset: forwarding stops here."""


#: What a broken or misbehaving peer raises: the connection ends, the proxy goes on.
_BROKEN_STREAM = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    MalformedMessageError,
)


# --- faults -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault, as applied to one request. Unset parameters are filled from the ``FaultPlan``.

    ``status`` and ``retry_after`` (seconds, sent as such or, with ``retry_after_date``, as an
    HTTP-date that many seconds ahead) are for ``status``, whose body is a registry error with
    ``code`` (by default one the status implies) or, with ``html``, a web page as a proxy's own
    error or login page is; ``seconds`` for ``stall``; ``rate``
    (bytes/s) for ``throttle``. For ``reset_mid_body``, ``offset`` is the number of body bytes
    forwarded before the reset; without it, ``fraction`` places the reset inside the body.
    """

    kind: FaultKind
    status: int | None = None
    retry_after: int | None = None
    retry_after_date: bool | None = None
    seconds: float | None = None
    rate: int | None = None
    fraction: float | None = None
    offset: int | None = None
    code: str | None = None
    html: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")


@dataclass(frozen=True)
class FaultPlan:
    """Which requests get which faults.

    A request *matches* when its method is in ``methods`` (empty: any) and ``path`` (a regex) is
    found in its target. Matching requests are numbered from 0; ``schedule`` maps such numbers to
    faults; any other matching request draws from ``rates`` (per-kind probabilities, summing to at
    most 1). At most ``max_faults`` faults are applied, so a test always finishes. The remaining
    fields parameterise drawn faults. A ``reset_mid_body`` on a body with ``Content-Length`` L
    forwards between 1 and L-1 bytes; on a chunked body, between 1 and ``mid_body_span`` bytes
    (a shorter body is forwarded whole but for its last chunk).
    """

    rates: Mapping[FaultKind, float] = field(default_factory=dict)
    schedule: Mapping[int, FaultKind | Fault] = field(default_factory=dict)
    methods: Collection[str] = frozenset()
    path: str = ""
    max_faults: int = 10
    statuses: tuple[int, ...] = (429, 500, 502, 503)
    retry_after: int = 1
    retry_after_date: bool = False
    stall_seconds: float = 30.0
    throttle_rate: int = 1 << 20
    mid_body_span: int = 1 << 20

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds in rates: {sorted(unknown)}")
        if any(rate < 0 for rate in self.rates.values()) or sum(self.rates.values()) > 1:
            raise ValueError("fault rates must be non-negative and sum to at most 1")
        if not self.statuses or self.throttle_rate <= 0 or self.mid_body_span <= 0:
            raise ValueError("a fault plan needs statuses, a positive throttle rate and span")
        re.compile(self.path)

    def matches(self, method: str, target: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return re.search(self.path, target) is not None

    def make(self, kind: FaultKind, rng: random.Random) -> Fault:
        """A fault of ``kind`` with every parameter it uses drawn or taken from this plan."""
        if kind == "status":
            return self.status_fault(rng.choice(self.statuses))
        if kind == "stall":
            return Fault(kind, seconds=self.stall_seconds)
        if kind == "throttle":
            return Fault(kind, rate=self.throttle_rate)
        if kind == "reset_mid_body":
            return Fault(kind, fraction=rng.random())
        return Fault(kind)

    def status_fault(self, status: int) -> Fault:
        """A ``status`` fault; only a 429 carries ``Retry-After`` unless a schedule says so."""
        if status != 429:
            return Fault("status", status)
        return Fault("status", status, self.retry_after, self.retry_after_date)

    def complete(self, fault: Fault, rng: random.Random) -> Fault:
        """``fault`` with the parameters it leaves unset filled as ``make`` would."""
        if fault.kind == "status" and fault.status is not None:
            base = self.status_fault(fault.status)
        else:
            base = self.make(fault.kind, rng)
        given = {
            f.name: getattr(fault, f.name)
            for f in dataclasses.fields(fault)
            if getattr(fault, f.name) is not None
        }
        return dataclasses.replace(base, **given)


class _FaultChooser:
    """The plan's decisions, in request order: the same seed and order give the same faults."""

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self._rng = random.Random(seed)
        self._matched = 0
        self.applied = 0

    def choose(self, method: str, target: str) -> Fault | None:
        if not self.plan.matches(method, target):
            return None
        index = self._matched
        self._matched += 1
        # Two draws per matching request, whatever happens: request n's fault never depends on
        # the kinds of the faults before it.
        roll = self._rng.random()
        params = random.Random(self._rng.getrandbits(64))
        if self.applied >= self.plan.max_faults:
            return None
        if index in self.plan.schedule:
            fault: Fault | None = self._scheduled(index, params)
        else:
            fault = self._rolled(roll, params)
        if fault is not None:
            self.applied += 1
        return fault

    def _scheduled(self, index: int, params: random.Random) -> Fault:
        entry = self.plan.schedule[index]
        if isinstance(entry, Fault):
            return self.plan.complete(entry, params)
        return self.plan.make(entry, params)

    def _rolled(self, roll: float, params: random.Random) -> Fault | None:
        threshold = 0.0
        for kind in FAULT_KINDS:
            threshold += self.plan.rates.get(kind, 0.0)
            if roll < threshold:
                return self.plan.make(kind, params)
        return None


# --- the record ---------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One request through the proxy, recorded as it happens.

    Byte counts are body payload (chunk framing excluded). ``request_body_bytes`` is what the
    proxy read from the client, forwarded or not; ``forwarded_body_bytes`` what it sent on to the
    registry. ``status`` is the final status the client received, None if it received none (a
    reset, a stall). Times are ``time.monotonic()``; ``finished_at`` is set before the last byte
    goes to the client, so a client that has its answer sees a finished exchange.
    """

    method: str
    path: str
    started_at: float
    fault: Fault | None = None
    status: int | None = None
    request_body_bytes: int = 0
    forwarded_body_bytes: int = 0
    response_body_bytes: int = 0
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def finish(self) -> None:
        if self.finished_at is None:
            self.finished_at = time.monotonic()


# --- HTTP/1.1 framing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    """A start line and headers, with the raw bytes that are forwarded unchanged."""

    raw: bytes
    start: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, raw: bytes) -> _Head:
        lines = raw.decode("latin-1").split("\r\n")
        start = tuple(lines[0].split(" ", 2))
        if len(start) < 2 or not start[0]:
            raise MalformedMessageError(f"bad start line {lines[0]!r}")
        headers = tuple(_header(line) for line in lines[1:] if line)
        return cls(raw, start, headers)

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` header, lower-cased."""
        return {t.strip().lower() for value in self.values(name) for t in value.split(",")}

    def content_length(self) -> int | None:
        values = {value.strip() for value in self.values("content-length")}
        if not values:
            return None
        if len(values) > 1 or not all(value.isdigit() for value in values):
            raise MalformedMessageError(f"bad Content-Length {sorted(values)}")
        return int(values.pop())

    def persistent(self, version: str) -> bool:
        """Whether the sender keeps the connection open after this message."""
        if version == "HTTP/1.0":
            return "keep-alive" in self.tokens("connection")
        return "close" not in self.tokens("connection")


def _header(line: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not colon or not name or name != name.strip():
        raise MalformedMessageError(f"bad header line {line!r}")
    return name.lower(), value.strip()


@dataclass(frozen=True)
class _Framing:
    """How a body ends: no body, after ``length`` bytes, at the last chunk, or at EOF."""

    kind: Literal["none", "length", "chunked", "eof"]
    length: int = 0


_NO_BODY = _Framing("none")


def _message_framing(head: _Head, *, otherwise: _Framing) -> _Framing:
    if "chunked" in head.tokens("transfer-encoding"):
        return _Framing("chunked")
    length = head.content_length()
    return otherwise if length is None else _Framing("length", length)


@dataclass(frozen=True)
class _Request:
    head: _Head

    @property
    def method(self) -> str:
        return self.head.start[0]

    @property
    def target(self) -> str:
        return self.head.start[1]

    @property
    def version(self) -> str:
        return self.head.start[2] if len(self.head.start) > 2 else "HTTP/1.0"

    @property
    def framing(self) -> _Framing:
        # A request with neither header has no body (RFC 9112 §6.3).
        return _message_framing(self.head, otherwise=_NO_BODY)

    @property
    def persistent(self) -> bool:
        return self.head.persistent(self.version)

    @property
    def expects_continue(self) -> bool:
        return "100-continue" in self.head.tokens("expect")


@dataclass(frozen=True)
class _Response:
    head: _Head

    @property
    def status(self) -> int:
        code = self.head.start[1]
        if not (code.isdigit() and len(code) == 3):
            raise MalformedMessageError(f"bad status {code!r}")
        return int(code)

    @property
    def interim(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101

    def framing(self, request_method: str) -> _Framing:
        if request_method == "HEAD" or self.status in (204, 304) or self.interim:
            return _NO_BODY
        return _message_framing(self.head, otherwise=_Framing("eof"))

    def persistent(self, request_method: str) -> bool:
        if self.framing(request_method).kind == "eof":
            return False
        return self.head.persistent(self.head.start[0])


@dataclass(frozen=True, slots=True)
class _Piece:
    """Raw bytes of a body as they go over the wire; ``payload`` unless chunk framing."""

    raw: bytes
    payload: bool
    last: bool = False


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    """The next message head; None when the peer closed cleanly between messages."""
    try:
        first = await reader.readexactly(1)
        if first not in _HEAD_STARTS:
            # Not HTTP (a TLS ClientHello begins with 0x16): refuse now rather than wait for a
            # blank line that will never come.
            raise MalformedMessageError(f"not an HTTP message: starts with {first!r}")
        raw = first + await reader.readuntil(_END_OF_HEAD)
    except asyncio.IncompleteReadError as error:
        if error.partial.strip():
            raise
        return None
    return _Head.parse(raw.lstrip(_CRLF))


async def _read_some(reader: asyncio.StreamReader, limit: int) -> bytes:
    data = await reader.read(limit)
    if not data:
        raise asyncio.IncompleteReadError(b"", limit)
    return data


async def _sized_pieces(
    reader: asyncio.StreamReader, length: int, piece_size: int, *, ends: bool
) -> AsyncIterator[_Piece]:
    remaining = length
    while remaining:
        data = await _read_some(reader, min(remaining, piece_size))
        remaining -= len(data)
        yield _Piece(data, payload=True, last=ends and not remaining)


async def _chunked_pieces(reader: asyncio.StreamReader, piece_size: int) -> AsyncIterator[_Piece]:
    while True:
        size_line = await reader.readuntil(_CRLF)
        size = _chunk_size(size_line)
        if size == 0:
            yield _Piece(size_line + await _read_trailers(reader), payload=False, last=True)
            return
        yield _Piece(size_line, payload=False)
        async for piece in _sized_pieces(reader, size, piece_size, ends=False):
            yield piece
        yield _Piece(await reader.readexactly(2), payload=False)


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip()
    try:
        return int(digits, 16)
    except ValueError:
        raise MalformedMessageError(f"bad chunk size line {line!r}") from None


async def _read_trailers(reader: asyncio.StreamReader) -> bytes:
    trailers = b""
    while (line := await reader.readuntil(_CRLF)) != _CRLF:
        trailers += line
    return trailers + _CRLF


async def _eof_pieces(reader: asyncio.StreamReader, piece_size: int) -> AsyncIterator[_Piece]:
    while data := await reader.read(piece_size):
        yield _Piece(data, payload=True)


def _body_pieces(
    reader: asyncio.StreamReader, framing: _Framing, piece_size: int = PIECE_SIZE
) -> AsyncIterator[_Piece]:
    """A message body read from ``reader`` in pieces, raw framing kept for forwarding."""
    if framing.kind == "length":
        return _sized_pieces(reader, framing.length, piece_size, ends=True)
    if framing.kind == "chunked":
        return _chunked_pieces(reader, piece_size)
    if framing.kind == "eof":
        return _eof_pieces(reader, piece_size)
    return _sized_pieces(reader, 0, piece_size, ends=True)


_HTML_PAGE = "<!DOCTYPE html><html><body><h1>Please sign in</h1></body></html>\n"


def _status_answer(fault: Fault, *, close: bool) -> tuple[bytes, bytes]:
    """The head and body of a ``status`` fault's answer: a registry-style error, Retry-After
    if asked."""
    status = fault.status or 503
    code = fault.code or ("TOOMANYREQUESTS" if status == 429 else "UNKNOWN")
    body = f'{{"errors":[{{"code":"{code}","message":"injected by the hoist test proxy"}}]}}\n'
    content_type = "application/json"
    if fault.html:
        body, content_type = _HTML_PAGE, "text/html; charset=utf-8"
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    if fault.retry_after is not None:
        lines.append(f"Retry-After: {_retry_after_value(fault)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body.encode()


def _retry_after_value(fault: Fault) -> str:
    seconds = fault.retry_after or 0
    if not fault.retry_after_date:
        return str(seconds)
    # An HTTP-date has whole seconds: rounding up keeps the wait at least ``seconds`` long.
    return email.utils.formatdate(math.ceil(time.time()) + seconds, usegmt=True)


def _bad_gateway() -> tuple[bytes, bytes]:
    body = b"upstream registry unreachable\n"
    head = "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode(), body


def _reset_offset(fault: Fault, framing: _Framing, span: int) -> int:
    """How many body bytes a ``reset_mid_body`` forwards before it cuts."""
    if fault.offset is not None:
        return fault.offset
    fraction = fault.fraction if fault.fraction is not None else 0.5
    if framing.kind == "length":
        return 1 + int(fraction * (framing.length - 1)) if framing.length > 1 else 0
    return 1 + int(fraction * (span - 1))


# --- connections --------------------------------------------------------------------------------


class _Pacer:
    """Holds a body to at most ``rate`` bytes per second, measured from the first byte."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self._start = time.monotonic()
        self._sent = 0

    @property
    def piece_size(self) -> int:
        # Small pieces under a rate, so the flow is smooth rather than bursts of 256 KiB.
        return PIECE_SIZE if self.rate is None else max(1, min(PIECE_SIZE, self.rate // 10))

    async def pace(self, size: int) -> None:
        if self.rate is None:
            return
        self._sent += size
        delay = self._start + self._sent / self.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class _Upstream:
    """One connection to the registry. Writes after it broke are dropped, so that a client still
    sending its body can be read to the end and get its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.broken = False

    @property
    def usable(self) -> bool:
        return not (self.broken or self.reader.at_eof() or self.writer.is_closing())

    async def send(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError:
            self.broken = True

    async def finish_half_closed(self) -> None:
        """Send FIN, read and drop whatever the registry answers, then close.

        Closing at once could send RST while the registry still has unread bytes, which may
        discard the part of the body the fault meant it to see.
        """
        try:
            with contextlib.suppress(*_BROKEN_STREAM, TimeoutError):
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                async with asyncio.timeout(UPSTREAM_LINGER):
                    while await self.reader.read(PIECE_SIZE):
                        pass
        finally:
            self.writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, as a crashed peer or middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


@dataclass
class _Connection:
    """A client connection and the upstream connection that serves it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    upstream_address: tuple[str, int]
    upstream: _Upstream | None = None

    async def open_upstream(self) -> _Upstream:
        if self.upstream is None or not self.upstream.usable:
            self.drop_upstream()
            reader, writer = await asyncio.open_connection(*self.upstream_address, limit=HEAD_LIMIT)
            self.upstream = _Upstream(reader, writer)
        return self.upstream

    def drop_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.writer.close()
            self.upstream = None

    async def answer(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.drop_upstream()
        self.writer.close()


# --- the proxy ----------------------------------------------------------------------------------

_Handler = Callable[[_Connection, _Request, Exchange, Fault | None], Awaitable[bool]]


class Proxy:
    """A running proxy: ``host`` is ``127.0.0.1:PORT``, ``url`` its http URL, ``log`` one
    ``Exchange`` per request in arrival order. Assigning ``faults`` starts a new decision
    sequence from the seed (request numbering starts again at 0); ``clear`` only empties the log.
    ``errors`` collects anything unexpected raised while serving: tests should find it empty.
    """

    def __init__(
        self, upstream_host: str, listener: socket.socket, *, seed: int, faults: FaultPlan
    ) -> None:
        port = int(listener.getsockname()[1])
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"
        self.upstream_host = upstream_host
        self.log: list[Exchange] = []
        self.errors: list[BaseException] = []
        self.seed = seed
        self._chooser = _FaultChooser(faults, seed)
        self._upstream_address = _split_host(upstream_host)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._main = self._loop.create_task(self._serve(listener))
        self._thread = threading.Thread(target=self._run, name=f"hoist-proxy-{port}", daemon=True)

    @property
    def faults(self) -> FaultPlan:
        return self._chooser.plan

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        # One assignment: the serving thread sees the old chooser or the new one, never a mix.
        self._chooser = _FaultChooser(plan, self.seed)

    @property
    def faults_applied(self) -> int:
        """Faults applied since the current plan was set."""
        return self._chooser.applied

    def exchanges(self, method: str | None = None, path_contains: str = "") -> list[Exchange]:
        return [
            exchange
            for exchange in list(self.log)
            if (method is None or exchange.method == method) and path_contains in exchange.path
        ]

    def body_bytes(self, method: str | None = None, path_contains: str = "") -> int:
        """Request body bytes the client sent in the matching exchanges."""
        return sum(e.request_body_bytes for e in self.exchanges(method, path_contains))

    def clear(self) -> None:
        self.log.clear()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, end every connection (stalls too) and join the thread."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._main.cancel)
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive():
                raise RuntimeError(f"proxy thread {self._thread.name} did not stop")

    def _run(self) -> None:
        loop = self._loop
        try:
            loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        except Exception as error:
            self.errors.append(error)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _serve(self, listener: socket.socket) -> None:
        server = await asyncio.start_server(self._on_client, sock=listener, limit=HEAD_LIMIT)
        try:
            await asyncio.Future()
        finally:
            server.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Lets the transports closed above run their connection_lost callbacks.
            await asyncio.sleep(0)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection = _Connection(reader, writer, self._upstream_address)
        try:
            while await self._exchange(connection):
                pass
        except _BROKEN_STREAM:
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a connection, and nothing awaits this task; ending normally
            # keeps Python 3.11's start_server callback from calling exception() on it.
            pass
        except Exception as error:
            self.errors.append(error)
        finally:
            self._tasks.discard(task)
            connection.close()

    async def _exchange(self, connection: _Connection) -> bool:
        """Serve one request; whether the client connection stays open for another."""
        try:
            head = await _read_head(connection.reader)
        except MalformedMessageError:
            # As Go's server does: a client that tried TLS here learns it at once and may
            # fall back to http (skopeo with --dest-tls-verify=false does).
            await connection.answer(_BAD_REQUEST)
            return False
        if head is None:
            return False
        request = _Request(head)
        exchange = Exchange(request.method, request.target, started_at=time.monotonic())
        exchange.fault = self._chooser.choose(request.method, request.target)
        self.log.append(exchange)
        handler = self._handler(exchange.fault)
        try:
            return await handler(connection, request, exchange, exchange.fault)
        finally:
            exchange.finish()

    def _handler(self, fault: Fault | None) -> _Handler:
        if fault is None or fault.kind == "throttle":
            return self._forward
        handlers: dict[FaultKind, _Handler] = {
            "status": self._answer_status,
            "reset_after_headers": self._reset_after_headers,
            "reset_mid_body": self._reset_mid_body,
            "stall": self._stall,
        }
        return handlers[fault.kind]

    # --- faithful forwarding (and throttle) ---

    async def _forward(
        self, connection: _Connection, request: _Request, exchange: Exchange, fault: Fault | None
    ) -> bool:
        rate = fault.rate if fault is not None else None
        pump: asyncio.Task[None] | None = None
        failed = False
        try:
            upstream = await connection.open_upstream()
            await upstream.send(request.head.raw)
            async with asyncio.TaskGroup() as group:
                pump = group.create_task(self._pump(connection, request, upstream, exchange, rate))
                relay = group.create_task(self._relay_response(connection, request, exchange))
        except* _BROKEN_STREAM:
            failed = True
        if failed:
            # The pump only fails on the client's side (writes to a broken registry are
            # dropped): a client that went away gets no 502.
            client_gone = pump is not None and _raised(pump)
            await self._fail_gateway(connection, exchange, client_gone=client_gone)
            return False
        if not relay.result():
            connection.drop_upstream()
        return request.persistent and relay.result()

    async def _pump(
        self,
        connection: _Connection,
        request: _Request,
        upstream: _Upstream,
        exchange: Exchange,
        rate: int | None,
        cut_at: int | None = None,
    ) -> None:
        """Stream the request body to the registry, paced to ``rate``, cut at ``cut_at``."""
        pacer = _Pacer(rate)
        async for piece in _body_pieces(connection.reader, request.framing, pacer.piece_size):
            raw = piece.raw
            if piece.payload:
                exchange.request_body_bytes += len(raw)
            if cut_at is not None:
                raw = _before_cut(piece, cut_at - exchange.forwarded_body_bytes)
            if piece.payload:
                exchange.forwarded_body_bytes += len(raw)
            await upstream.send(raw)
            if len(raw) < len(piece.raw) or (cut_at is not None and piece.last):
                raise _BodyCut
            await pacer.pace(len(raw) if piece.payload else 0)
        if cut_at is not None:
            raise _BodyCut

    async def _relay_response(
        self, connection: _Connection, request: _Request, exchange: Exchange
    ) -> bool:
        """Relay the registry's answer (interim ones too); whether it keeps the connection."""
        assert connection.upstream is not None
        upstream = connection.upstream
        response = await self._final_response(connection, upstream)
        framing = response.framing(request.method)
        exchange.status = response.status
        if framing.kind == "none":
            exchange.finish()
        await connection.answer(response.head.raw)
        async for piece in _body_pieces(upstream.reader, framing):
            exchange.response_body_bytes += len(piece.raw) if piece.payload else 0
            if piece.last:
                exchange.finish()
            await connection.answer(piece.raw)
        return response.persistent(request.method)

    async def _final_response(self, connection: _Connection, upstream: _Upstream) -> _Response:
        while True:
            head = await _read_head(upstream.reader)
            if head is None:
                raise asyncio.IncompleteReadError(b"", None)
            response = _Response(head)
            if not response.interim:
                return response
            await connection.answer(head.raw)

    async def _fail_gateway(
        self, connection: _Connection, exchange: Exchange, *, client_gone: bool
    ) -> None:
        """The registry or the client broke off: a 502 if the client waits for an answer."""
        connection.drop_upstream()
        if client_gone or exchange.status is not None or connection.writer.is_closing():
            return
        with contextlib.suppress(*_BROKEN_STREAM):
            await self._answer_own(connection, exchange, 502, *_bad_gateway())

    # --- faults ---

    async def _answer_status(
        self, connection: _Connection, request: _Request, exchange: Exchange, fault: Fault | None
    ) -> bool:
        assert fault is not None
        # A client waiting for 100 Continue sends no body: answer now, and close, since the
        # body's fate on this connection is then unknown.
        keep_open = request.persistent and not request.expects_continue
        if not request.expects_continue:
            await self._discard_body(connection, request, exchange)
        head, body = _status_answer(fault, close=not keep_open)
        if request.method == "HEAD":
            body = b""  # an answer to HEAD has headers only (Content-Length still says the size)
        await self._answer_own(connection, exchange, fault.status or 503, head, body)
        return keep_open

    async def _answer_own(
        self, connection: _Connection, exchange: Exchange, status: int, head: bytes, body: bytes
    ) -> None:
        """Answer from the proxy itself, recorded like a relayed answer."""
        exchange.status = status
        exchange.response_body_bytes = len(body)
        exchange.finish()
        await connection.answer(head + body)

    async def _reset_after_headers(
        self, connection: _Connection, request: _Request, exchange: Exchange, fault: Fault | None
    ) -> bool:
        exchange.finish()
        _reset(connection.writer)
        return False

    async def _reset_mid_body(
        self, connection: _Connection, request: _Request, exchange: Exchange, fault: Fault | None
    ) -> bool:
        assert fault is not None
        cut_at = _reset_offset(fault, request.framing, self._chooser.plan.mid_body_span)
        upstream = await connection.open_upstream()
        if request.expects_continue:
            await connection.answer(_CONTINUE)
        await upstream.send(request.head.raw)
        with contextlib.suppress(_BodyCut):
            await self._pump(connection, request, upstream, exchange, None, cut_at)
        # The registry first, so that a client that sees the reset knows the registry has
        # already taken in the partial body.
        connection.upstream = None
        await upstream.finish_half_closed()
        exchange.finish()
        _reset(connection.writer)
        return False

    async def _stall(
        self, connection: _Connection, request: _Request, exchange: Exchange, fault: Fault | None
    ) -> bool:
        assert fault is not None
        if not request.expects_continue:
            await self._discard_body(connection, request, exchange)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(fault.seconds):
                # Reading on lets a client that gives up end the stall early.
                while await connection.reader.read(PIECE_SIZE):
                    pass
        exchange.finish()
        return False

    async def _discard_body(
        self, connection: _Connection, request: _Request, exchange: Exchange
    ) -> None:
        async for piece in _body_pieces(connection.reader, request.framing):
            exchange.request_body_bytes += len(piece.raw) if piece.payload else 0


def _raised(task: asyncio.Task[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is not None


def _before_cut(piece: _Piece, room: int) -> bytes:
    """The part of ``piece`` that may still be forwarded with ``room`` payload bytes left."""
    if not piece.payload:
        # Chunk framing passes, except the end of the body: the registry must never see it.
        return b"" if piece.last or room <= 0 else piece.raw
    return piece.raw[: max(room, 0)]


def _split_host(host: str) -> tuple[str, int]:
    name, colon, port = host.rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(f"upstream must be HOST:PORT, got {host!r}")
    return name.strip("[]"), int(port)


def _listen() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    return listener


def start_proxy(upstream_host: str, *, seed: int = 0, faults: FaultPlan | None = None) -> Proxy:
    """Start a proxy on a free loopback port in front of ``upstream_host`` (``HOST:PORT``, http).

    It accepts connections as soon as this returns (the socket listens before the thread starts).
    """
    listener = _listen()
    proxy = Proxy(upstream_host, listener, seed=seed, faults=faults or FaultPlan())
    proxy.start()
    return proxy


@contextlib.contextmanager
def running_proxy(upstream_host: str, **options: Any) -> Iterator[Proxy]:
    """A proxy for the duration of a ``with`` block; ``options`` as for ``start_proxy``."""
    proxy = start_proxy(upstream_host, **options)
    try:
        yield proxy
    finally:
        proxy.stop()
