"""The token endpoint of a Bearer challenge: which request to send, what its answer means, and
the cache that keeps answers until shortly before they expire.

Which grant (distribution's ``session.go``, as Docker uses it): a refresh token (the identity
token, or one the server handed back earlier) → ``POST`` ``grant_type=refresh_token``; with
``force_oauth``, a username and password → ``POST`` ``grant_type=password``; otherwise ``GET``
with Basic credentials and ``account`` when there are any, anonymous when there are none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from engine.errors import (
    RegistryResponseError,
    TooManyRequestsError,
    UnauthorizedError,
)
from engine.registry import protocol
from engine.registry.auth.messages import (
    AUTHORIZATION,
    HttpRequest,
    HttpResponse,
    basic_authorization,
)
from engine.registry.auth_config import AuthConfig

#: Older Docker clients assumed 60 s; servers promise at least that, so a shorter one is a typo.
MINIMUM_LIFETIME = 60.0
#: Go's int64 of seconds, the longest ``expires_in`` Docker's client reads.
_LONGEST_LIFETIME = 2**63 - 1
#: Fetch a new token this long before the old one expires, so none expires in flight.
REFRESH_MARGIN = 30.0

_FORM = "application/x-www-form-urlencoded"
_HIDDEN = "***"


@dataclass(frozen=True)
class TokenEndpoint:
    """Where a Bearer challenge sends us: the realm URL and the service it names."""

    realm: str
    service: str


@dataclass(frozen=True)
class Token:
    """A bearer token and when it stops being good; ``refresh_token`` when the server gave one."""

    value: str = field(repr=False)
    expires_at: float
    refresh_token: str = field(default="", repr=False)

    def usable(self, now: float) -> bool:
        return now < self.expires_at - REFRESH_MARGIN


TokenKey = tuple[str, str, tuple[str, ...]]


class TokenCache:
    """Tokens by (realm, service, scope set); a token leaves it before it expires."""

    def __init__(self) -> None:
        self._tokens: dict[TokenKey, Token] = {}

    def __repr__(self) -> str:
        return f"TokenCache({len(self._tokens)} tokens)"

    def get(self, key: TokenKey, now: float) -> Token | None:
        token = self._tokens.get(key)
        return token if token is not None and token.usable(now) else None

    def put(self, key: TokenKey, token: Token) -> None:
        self._tokens[key] = token

    def discard(self, value: str) -> None:
        """Drop every entry holding the token ``value`` (the registry refused it)."""
        for key in [key for key, token in self._tokens.items() if token.value == value]:
            del self._tokens[key]

    def clear(self) -> None:
        self._tokens.clear()


def _with_params(url: str, params: Sequence[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def get_token_request(
    endpoint: TokenEndpoint,
    scopes: Sequence[str],
    credentials: AuthConfig,
    *,
    offline: bool = False,
    client_id: str = "",
) -> HttpRequest:
    """``GET realm?service=…&scope=…`` with Basic credentials and ``account`` when there are any."""
    params = [("service", endpoint.service)] if endpoint.service else []
    params += [("scope", scope) for scope in scopes]
    if offline:
        # Asks the server for a refresh token, which `login` stores as the identity token.
        params += [("offline_token", "true"), ("client_id", client_id)]
    headers: dict[str, str] = {}
    if credentials.username and credentials.password:
        params.append(("account", credentials.username))
        headers[AUTHORIZATION] = basic_authorization(credentials.username, credentials.password)
    url = _with_params(endpoint.realm, params)
    return HttpRequest("GET", url, headers, is_token_request=True)


def _post(endpoint: TokenEndpoint, form: list[tuple[str, str]]) -> HttpRequest:
    body = urlencode(form).encode("ascii")
    headers = {"Content-Type": _FORM}
    return HttpRequest("POST", endpoint.realm, headers, body=body, is_token_request=True)


def refresh_token_request(
    endpoint: TokenEndpoint, scopes: Sequence[str], refresh_token: str, *, client_id: str
) -> HttpRequest:
    """``POST`` ``grant_type=refresh_token``: an OAuth2 refresh token buys an access token."""
    form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("service", endpoint.service),
        ("scope", " ".join(scopes)),
        ("client_id", client_id),
    ]
    return _post(endpoint, form)


def password_grant_request(
    endpoint: TokenEndpoint, scopes: Sequence[str], credentials: AuthConfig, *, client_id: str
) -> HttpRequest:
    """``POST`` ``grant_type=password`` with ``access_type=offline`` to get a refresh token too."""
    form = [
        ("grant_type", "password"),
        ("username", credentials.username),
        ("password", credentials.password),
        ("access_type", "offline"),
        ("service", endpoint.service),
        ("scope", " ".join(scopes)),
        ("client_id", client_id),
    ]
    return _post(endpoint, form)


def token_request(
    endpoint: TokenEndpoint,
    scopes: Sequence[str],
    credentials: AuthConfig,
    *,
    refresh_token: str = "",
    client_id: str,
    offline: bool = False,
    force_oauth: bool = False,
) -> HttpRequest:
    """The request distribution's token handler would send for these credentials."""
    if refresh_token:
        return refresh_token_request(endpoint, scopes, refresh_token, client_id=client_id)
    if force_oauth and credentials.username and credentials.password:
        return password_grant_request(endpoint, scopes, credentials, client_id=client_id)
    return get_token_request(endpoint, scopes, credentials, offline=offline, client_id=client_id)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (a server may echo what it was sent)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, _HIDDEN)
    return text


def credential_secrets(credentials: AuthConfig) -> list[str]:
    """Every string that would give the credentials away, to blank from what a server says."""
    secrets = [credentials.password, credentials.identity_token, credentials.registry_token]
    if credentials.password:
        basic = basic_authorization(credentials.username, credentials.password)
        secrets.append(basic.partition(" ")[2])
    return secrets


def _server_message(body: bytes) -> str:
    """What the server said went wrong, in any of the shapes token servers use."""
    details = protocol.parse_errors(body)
    if details and details[0].message:
        return details[0].message
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(document, dict):
        return ""
    # OAuth2 (RFC 6749 §5.2), Docker Hub's "details", and a plain "message".
    for key in ("error_description", "details", "message", "error"):
        if isinstance(document.get(key), str) and document[key]:
            return str(document[key])
    return ""


def token_error(
    response: HttpResponse, *, url: str, secrets: Iterable[str]
) -> RegistryResponseError:
    """A refusal from the token endpoint, as an error whose message holds no secret."""
    message = _server_message(response.body) or "authentication required"
    if response.status == 429:
        cls: type[RegistryResponseError] = TooManyRequestsError
    elif response.status >= 500:
        # The token server is down, not the credentials wrong: leave it retryable.
        cls = RegistryResponseError
        message = f"token server answered {response.status}: {message}"
    else:
        cls = UnauthorizedError
        if not message.lower().startswith("unauthorized"):
            message = f"unauthorized: {message}"
    return cls(redact(message, secrets), status=response.status, url=_without_query(url))


def _without_query(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query=""))


def _lifetime(document: dict[str, Any]) -> float:
    expires_in = document.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return MINIMUM_LIFETIME
    if isinstance(expires_in, float) and math.isnan(expires_in):
        return MINIMUM_LIFETIME  # a token expiring at NaN would never be reused
    # Clamped before float(): an integer of 400 digits is valid JSON, and no float.
    return float(min(max(expires_in, MINIMUM_LIFETIME), _LONGEST_LIFETIME))


def _issued_at(document: dict[str, Any], now: float) -> float:
    text = document.get("issued_at")
    if not isinstance(text, str) or not text:
        return now
    try:
        issued = datetime.fromisoformat(text)
    except ValueError:
        return now
    if issued.tzinfo is None:
        issued = issued.replace(tzinfo=UTC)  # RFC 3339 times are UTC when no offset is given
    return issued.timestamp()


def _token_document(response: HttpResponse, url: str) -> dict[str, Any]:
    try:
        document = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict):
        raise UnauthorizedError(
            "unable to decode token response", status=response.status, url=_without_query(url)
        )
    return document


def parse_token_response(
    response: HttpResponse, now: float, *, url: str, secrets: Iterable[str]
) -> Token:
    """The token in a 200 answer (``token`` or ``access_token``); any other answer raises."""
    if response.status != 200:
        raise token_error(response, url=url, secrets=secrets)
    document = _token_document(response, url)
    value = document.get("access_token") or document.get("token")
    if not isinstance(value, str) or not value:
        raise UnauthorizedError(
            "authorization server did not include a token in the response",
            status=response.status,
            url=_without_query(url),
        )
    refresh = document.get("refresh_token")
    return Token(
        value=value,
        expires_at=_issued_at(document, now) + _lifetime(document),
        refresh_token=refresh if isinstance(refresh, str) else "",
    )
