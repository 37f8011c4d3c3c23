"""``hoist push`` as a client of a running ``hoist serve``, as the docker CLI is of dockerd.

The daemon has the engine loaded and its connections warm; the command then only reads
``config.json``, sends ``POST /images/{name}/push`` with the credentials in ``X-Registry-Auth``
and draws the JSON message stream it gets back with the same renderers as a push of its own.
So this module, and everything it imports, is the standard library and the engine's leaves
(addresses, the reference grammar, config.json, the renderers): never aiohttp, asyncio or the
push machinery, whose import is most of a small push's time. It blocks; no event loop.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.errors import DaemonError, DigestReferenceError, InvalidReferenceError, UsageError
from engine.progress.events import Drawable, Message, PushFailed
from engine.progress.jsonstream import StreamDecoder
from engine.reference import DEFAULT_TAG, familiar_name, parse_normalized_named
from engine.registry.auth_config import AuthConfig, to_registry_auth
from engine.serve.address import Address, default_socket, parse_address

#: Names the daemon, as ``DOCKER_HOST`` does for the docker CLI.
HOST_ENV = "HOIST_HOST"

#: Connecting and each read: a push's stream may stay quiet while a big layer compresses, so
#: the read limit is generous; Ctrl-C ends a wait at any time.
TIMEOUT = 600.0


class DaemonUnreachable(DaemonError):
    """Nothing answers at the address: no request was sent."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, as the docker client talks to its daemon."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def connection(address: Address, timeout: float = TIMEOUT) -> http.client.HTTPConnection:
    if address.path is not None:
        return _UnixConnection(address.path, timeout)
    return http.client.HTTPConnection(address.host, address.port, timeout=timeout)


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
) -> list[str]:
    """Push ``name`` (every tag of its repository with ``all_tags``) through the daemon, drawing
    its stream; the error message of each push that failed.

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
    if not all_tags:
        # Without a tag the daemon would push every tag (its --all-tags), as dockerd does.
        path += "?" + urllib.parse.urlencode({"tag": tag or DEFAULT_TAG})
    headers = {"X-Registry-Auth": to_registry_auth(credentials(named.domain))}
    client = connection(address)
    try:
        _connect(client, address)
        if not all_tags and not tag:
            draw(Message(f"Using default tag: {DEFAULT_TAG}"))
        return _draw_stream(_lines(_request(client, address, path, headers)), draw)
    finally:
        client.close()


def _connect(client: http.client.HTTPConnection, address: Address) -> None:
    try:
        client.connect()
    except OSError as exc:
        raise DaemonUnreachable(
            f"Cannot connect to the hoist serve at {address}. Is it running? ({exc.strerror})"
        ) from None


def _request(
    client: http.client.HTTPConnection, address: Address, target: str, headers: dict[str, str]
) -> http.client.HTTPResponse:
    try:
        client.request("POST", target, headers=headers)
        response = client.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        raise DaemonError(f"the hoist serve at {address} failed to answer: {exc}") from None
    if response.status != 200:
        raise DaemonError(_refusal(response))
    return response


def _refusal(response: http.client.HTTPResponse) -> str:
    """The daemon's ``{"message": …}``, as the docker CLI prints dockerd's."""
    body = response.read()
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    if isinstance(message, str) and message:
        return message
    return f"the daemon answered {response.status} {response.reason}"


def _lines(response: http.client.HTTPResponse) -> Iterator[object]:
    try:
        for line in response:
            if line.strip():
                yield json.loads(line)
    except ValueError as exc:
        raise DaemonError(f"the daemon's stream is not JSON: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
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
