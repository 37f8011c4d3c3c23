"""``hoist push`` as a client of a running ``hoist serve``, as the docker CLI is of dockerd.

The daemon has the engine loaded and its connections warm; the command then only reads
``config.json``, sends ``POST /images/{name}/push`` with the credentials in ``X-Registry-Auth``
and draws the JSON message stream it gets back with the same renderers as a push of its own.
So this module, and everything it imports, is the standard library and the engine's leaves
(addresses, the reference grammar, config.json, the renderers): never aiohttp, asyncio or the
push machinery, whose import is most of a small push's time. It blocks; no event loop.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import (
    DaemonError,
    DaemonUnreachable,
    DigestReferenceError,
    InvalidReferenceError,
    UsageError,
)
from engine.progress.events import Drawable, Message, PushFailed
from engine.progress.jsonstream import StreamDecoder
from engine.reference import DEFAULT_TAG, familiar_name, parse_normalized_named
from engine.registry.auth_config import AuthConfig, to_registry_auth, to_registry_config
from engine.serve.address import Address, default_socket, parse_address

if TYPE_CHECKING:
    from engine.progress.summary import PushSummary

#: Names the daemon, as ``DOCKER_HOST`` does for the docker CLI.
HOST_ENV = "HOIST_HOST"

#: Connecting and each read: a push's stream may stay quiet while a big layer compresses, so
#: the read limit is generous; Ctrl-C ends a wait at any time.
TIMEOUT = 600.0


class Answer:
    """The daemon's answer to one HTTP/1.0 request: its status, then its body as it arrives.

    HTTP/1.0 because its answer is the simplest to read: no chunked encoding, the body ends
    where the connection does (aiohttp and Go's net/http both answer a 1.0 request so). That
    keeps ``http.client`` (and the email parser and ssl it imports: a sixth of this command's
    start) out of the command.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._body = sock.makefile("rb")
        try:
            self.status, self.reason = self._read_head()
        except BaseException:
            self.close()
            raise

    def _read_head(self) -> tuple[int, str]:
        status_line = self._body.readline(_LINE_LIMIT)
        version, _, rest = status_line.decode("latin-1").strip().partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise OSError(f"not an HTTP answer: {status_line[:60]!r}")
        while self._body.readline(_LINE_LIMIT).strip():
            pass  # headers: nothing in them matters to this client
        return int(code), reason

    def __iter__(self) -> Iterator[bytes]:
        """The body's lines."""
        return iter(self._body)

    def read(self) -> bytes:
        return self._body.read()

    def close(self) -> None:
        self._body.close()
        self._sock.close()


#: The longest status or header line read (a guard against a peer that is not HTTP).
_LINE_LIMIT = 65536


def request(
    address: Address,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
    body: bytes = b"",
) -> Answer:
    """Send one request; raises ``DaemonUnreachable`` when nothing listens."""
    try:
        sock = _connect(address, timeout)
    except OSError as exc:
        raise DaemonUnreachable(
            f"Cannot connect to the hoist serve at {address}. Is it running? ({exc.strerror})"
        ) from None
    lines = [f"{method} {target} HTTP/1.0", "Host: hoist", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    except OSError as exc:
        sock.close()
        raise DaemonError(f"the hoist serve at {address} failed to answer: {exc}") from None
    try:
        return Answer(sock)  # closes the socket if it fails
    except OSError as exc:
        raise DaemonError(f"the hoist serve at {address} failed to answer: {exc}") from None


def _connect(address: Address, timeout: float) -> socket.socket:
    if address.path is None:
        return socket.create_connection((address.host, address.port), timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address.path)
    except BaseException:
        sock.close()
        raise
    return sock


def ping(address: Address, timeout: float = 2.0) -> bool:
    """Whether the daemon at ``address`` answers ``GET /_ping`` with 200."""
    try:
        answer = request(address, "GET", "/_ping", timeout=timeout)
    except DaemonError:
        return False
    try:
        return answer.status == 200
    finally:
        answer.close()


def find_daemon(host: str | None, root: Path) -> tuple[Address, bool] | None:
    """The ``hoist serve`` to push through, and whether the user named it: ``host`` (``-H``),
    else ``$HOIST_HOST``, else the default socket in ``root`` if it exists. None: push in this
    process."""
    named = host or os.environ.get(HOST_ENV)
    if named:
        address = parse_address(named)
        if not address.loopback:
            # This client speaks plain HTTP: credentials go in its headers.
            raise UsageError(
                f"hoist push reaches a hoist serve on a unix socket or a loopback address, "
                f"not {address.host}"
            )
        return address, True
    path = default_socket(root)
    return (Address(path=str(path)), False) if path.is_socket() else None


def push(
    address: Address,
    name: str,
    *,
    all_tags: bool,
    credentials: Callable[[str], AuthConfig],
    draw: Callable[[Drawable], None],
    source: Path | None = None,
    options: Mapping[str, str] | None = None,
) -> list[str]:
    """Push ``name`` (every tag of its repository with ``all_tags``; from the archive or layout
    at ``source`` if given) through the daemon, drawing its stream; the error message of each
    push that failed. ``options``: Hoist's query parameters for ``--compression``,
    ``--compression-level`` and ``--quiet``.

    ``credentials`` gives the stored credentials of a registry's domain. Raises
    ``DaemonUnreachable`` before anything is sent when nobody listens, ``DaemonError`` when the
    daemon refuses the request (no such image, a digest reference).
    """
    named = parse_normalized_named(name)
    tag = named.tag or ""
    if all_tags and (tag or named.digest is not None):
        raise InvalidReferenceError("tag can't be used with --all-tags/-a", name)
    if named.digest is not None:
        raise DigestReferenceError()
    path = f"/images/{urllib.parse.quote(familiar_name(named), safe='/:')}/push"
    query = {} if all_tags else {"tag": tag or DEFAULT_TAG}
    # Without a tag the daemon would push every tag (its --all-tags), as dockerd does.
    path += _query(query, source, options)
    headers = {"X-Registry-Auth": to_registry_auth(credentials(named.domain))}
    answer = request(address, "POST", path, headers)
    try:
        if answer.status != 200:
            raise DaemonError(_refusal(answer))
        if not all_tags and not tag:
            draw(Message(f"Using default tag: {DEFAULT_TAG}"))
        return _draw_stream(_lines(answer), draw)
    finally:
        answer.close()


def push_many(
    address: Address,
    names: Sequence[str],
    *,
    credentials: Callable[[str], AuthConfig],
    draw: Callable[[Drawable], None],
    source: Path | None = None,
    options: Mapping[str, str] | None = None,
) -> list[PushSummary]:
    """Push ``names`` at once through the daemon as one batch (its ``POST /hoist/push``),
    drawing their interleaved stream; the batch's summary, a row per name. The arguments and
    errors are ``push``'s; the credentials sent are those of each registry the names are in."""
    domains = sorted({domain for domain in map(_domain, names) if domain is not None})
    by_registry = {domain: credentials(domain) for domain in domains}
    headers = {"X-Registry-Config": to_registry_config(by_registry)}
    body = json.dumps({"Refs": list(names)}).encode()
    path = "/hoist/push" + _query({}, source, options)
    answer = request(address, "POST", path, headers, body=body)
    try:
        if answer.status != 200:
            raise DaemonError(_refusal(answer))
        return _draw_batch(_lines(answer), draw)
    finally:
        answer.close()


def _domain(name: str) -> str | None:
    """The registry of ``name``; None for a name that is no reference (its push refuses it)."""
    try:
        return parse_normalized_named(name).domain
    except InvalidReferenceError:
        return None


def _query(query: dict[str, str], source: Path | None, options: Mapping[str, str] | None) -> str:
    """A push's query string: ``query``, then Hoist's own parameters: ``from`` (the daemon reads
    the archive or layout where it lies), and ``options`` (``compression``, ``compressionLevel``,
    checked there; ``quiet``)."""
    if source is not None:
        query["from"] = str(source.absolute())
    query.update(options or {})
    return "?" + urllib.parse.urlencode(query) if query else ""


def _refusal(answer: Answer) -> str:
    """The daemon's ``{"message": …}``, as the docker CLI prints dockerd's."""
    try:
        message = json.loads(answer.read()).get("message")
    except (OSError, ValueError, AttributeError):
        message = None
    if isinstance(message, str) and message:
        return message
    return f"the daemon answered {answer.status} {answer.reason}"


def _lines(answer: Answer) -> Iterator[object]:
    try:
        for line in answer:
            if line.strip():
                yield json.loads(line)
    except ValueError as exc:
        raise DaemonError(f"the daemon's stream is not JSON: {exc}") from None
    except OSError as exc:
        raise DaemonError(f"the daemon's stream broke off: {exc}") from None


def _draw_stream(messages: Iterator[object], draw: Callable[[Drawable], None]) -> list[str]:
    decoder = StreamDecoder()
    failures: list[str] = []
    for message in messages:
        event = decoder.decode(message)
        if event is None:
            continue
        if isinstance(event, PushFailed):
            failures.append(event.message)
        draw(event)
    return failures


def _draw_batch(messages: Iterator[object], draw: Callable[[Drawable], None]) -> list[PushSummary]:
    """Draw a batch's stream up to its summary, the last message."""
    # Here, not at the top: a push of one image needs none of it (a dataclass's making is
    # about a millisecond of this command's start).
    from engine.progress.summary import summary_in

    summary: list[PushSummary] | None = None

    def until_summary() -> Iterator[object]:
        nonlocal summary
        for message in messages:
            summary = summary_in(message)
            if summary is not None:
                return
            yield message

    failures = _draw_stream(until_summary(), draw)
    if summary is None:
        # The daemon's error for the batch as a whole, if it sent one, comes last.
        raise DaemonError(failures[-1] if failures else "the daemon's stream ended too soon")
    return summary
