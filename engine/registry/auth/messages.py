"""The HTTP messages an auth flow exchanges with its driver, and the headers it writes.

The flow never touches a socket: it yields ``HttpRequest`` values and is sent ``HttpResponse``
values back. Both are plain data so that a test can play registry and token server in memory.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol, cast

AUTHORIZATION = "Authorization"
WWW_AUTHENTICATE = "WWW-Authenticate"
_HIDDEN = "***"


@dataclass(frozen=True)
class HttpRequest:
    """One request for the driver to send.

    ``body=None`` means "the caller's own body": the driver re-opens and attaches it, so a
    retried upload replays from byte 0. Token requests carry their own body (or none).
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None
    is_token_request: bool = False

    def __repr__(self) -> str:
        # Authorization values and token-request forms carry secrets; a repr may reach a log.
        headers = {
            name: _HIDDEN if name.lower() == AUTHORIZATION.lower() else value
            for name, value in self.headers.items()
        }
        body = "None" if self.body is None else f"<{len(self.body)} bytes>"
        return (
            f"HttpRequest(method={self.method!r}, url={self.url!r}, headers={headers!r}, "
            f"body={body}, is_token_request={self.is_token_request!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class HttpResponse:
    """One answer, as the driver received it; ``headers`` is case-insensitive."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


class _MultiHeaders(Protocol):
    def getall(self, key: str, default: list[str], /) -> list[str]: ...


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of a header that may repeat (``WWW-Authenticate``), in order."""
    if hasattr(headers, "getall"):
        # aiohttp's CIMultiDict keeps each repeated header; Mapping.get would see only the first.
        return list(cast(_MultiHeaders, headers).getall(name, []))
    wanted = name.lower()
    return [value for key, value in headers.items() if key.lower() == wanted]


def without_authorization(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() != "authorization"}


def authorized(request: HttpRequest, authorization: str | None) -> HttpRequest:
    """The request with ``authorization`` as its only Authorization header (or none)."""
    headers = without_authorization(request.headers)
    if authorization is not None:
        headers[AUTHORIZATION] = authorization
    return replace(request, headers=headers)


def authorization_of(request: HttpRequest) -> str | None:
    values = header_values(request.headers, AUTHORIZATION)
    return values[0] if values else None


def basic_authorization(username: str, password: str) -> str:
    pair = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def bearer_authorization(token: str) -> str:
    return f"Bearer {token}"
