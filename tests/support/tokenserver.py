"""A Docker token server for tests: where a registry with ``auth: token`` sends its clients.

It speaks both halves of the protocol that Distribution's clients use:

- ``GET REALM?service=&scope=&account=&offline_token=&client_id=`` with optional Basic credentials
  (no credentials: an anonymous token, as Docker Hub gives);
- ``POST REALM`` with an OAuth2 form, ``grant_type=password`` (``username``, ``password``,
  ``access_type=offline`` for a refresh token) or ``grant_type=refresh_token``.

Answers are ``{"token", "access_token", "expires_in", "issued_at", "refresh_token"?}``. Tokens are
ES256 JWTs whose signing certificate (in the ``x5c`` header) chains to a CA made at test time; the
registry trusts that CA through ``rootcertbundle``. Each account is granted the actions its
``grants`` allow (repository name patterns, ``fnmatch`` style, to actions; ``*`` means any). Every
request is recorded in ``requests`` so tests can count tokens and check what was sent where.

It runs ``http.server`` in a thread of its own: no event loop, so it never blocks one.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fnmatch
import json
import math
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509 import load_pem_x509_certificate

from tests.support.registry import TokenAuth
from tests.support.tls import CertificateAuthority, server_context

#: Distribution accepts a token until ``exp`` plus this much (registry/auth/token/token.go, Leeway).
REGISTRY_LEEWAY = 60
DEFAULT_SERVICE = "hoist-test-registry"
DEFAULT_ISSUER = "hoist-test-token-issuer"
#: Every action on every repository: what a user without explicit ``grants`` may do.
ALL_ACTIONS: Mapping[str, Sequence[str]] = {"*": ("*",)}
_MAX_BODY = 64 << 10
_HANDLER_TIMEOUT = 10.0
#: How often the serving thread looks for a stop request: the bound on how long stop() waits.
_POLL_INTERVAL = 0.05


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rfc3339(moment: float) -> str:
    return datetime.datetime.fromtimestamp(int(moment), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Scope:
    """A resource scope, ``TYPE:NAME:ACTION[,ACTION...]`` (the name may itself hold ``:``)."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        resource_type, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        if not resource_type or not name:
            return None
        return cls(resource_type, name, tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def claim(self) -> dict[str, Any]:
        """The entry of the JWT's ``access`` claim that grants this scope."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse_scopes(values: Sequence[str]) -> list[Scope]:
    """Scopes from ``scope`` parameters; each value may hold several, space separated."""
    parsed = (Scope.parse(text) for value in values for text in value.split())
    return [scope for scope in parsed if scope is not None]


class JwtSigner:
    """Signs JWTs with ES256, its certificate in the ``x5c`` header where Distribution looks."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate_pem: bytes) -> None:
        self._key = key
        certificate = load_pem_x509_certificate(certificate_pem)
        der = certificate.public_bytes(serialization.Encoding.DER)
        self._header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode())
            for part in (self._header, claims)
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        # JWS wants the raw r‖s pair, each padded to the curve size, not the DER sequence.
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}"


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server received, and what it answered."""

    method: str
    #: The request target as sent (path and query): credentials must never appear here.
    target: str
    #: The user of the Basic credentials, if any were sent.
    basic_user: str | None
    #: POST form fields, as sent.
    form: Mapping[str, str]
    grant_type: str
    service: str
    account: str
    client_id: str
    offline_token: bool
    scopes: tuple[str, ...]
    status: int
    #: The scopes the issued token grants (empty when no token was issued).
    granted: tuple[str, ...] = ()
    refresh_token_issued: bool = False

    @property
    def issued(self) -> bool:
        return self.status == 200


@dataclass
class _Grant:
    """An authenticated caller: its subject and where its authentication came from."""

    subject: str
    refresh_token: str = ""


class _Refused(Exception):
    """A request the server turns down, with the error body Distribution's token server sends."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"errors": [{"code": self.code, "message": self.message}]}

    def headers(self) -> dict[str, str]:
        if self.status != 401:
            return {}
        return {"WWW-Authenticate": 'Basic realm="hoist-test-token-server"'}


@dataclass(eq=False)
class TokenServer:
    """A running token server on ``127.0.0.1``; ``realm`` is the URL the registry points to.

    ``expires_in`` is what answers say. ``lifetime``, when set, is how many seconds after issue
    the *registry* refuses a token: the ``exp`` claim is moved back by Distribution's 60 s leeway,
    so a short ``lifetime`` (a few seconds) makes a real registry refuse a token in the middle of
    a push while the client still believes it valid. Attributes may be changed while it runs.
    """

    ca: CertificateAuthority
    users: Mapping[str, str] = field(default_factory=dict, repr=False)
    grants: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)
    service: str = DEFAULT_SERVICE
    issuer: str = DEFAULT_ISSUER
    expires_in: int = 300
    lifetime: float | None = None
    #: Give tokens to callers without credentials (their access comes from ``grants[""]``).
    anonymous: bool = True
    #: Refuse every request with 401, whatever it carries.
    reject_all: bool = False
    tls: bool = False

    def __post_init__(self) -> None:
        pair, key = self.ca.issue_signing("token-signer")
        self._signer = JwtSigner(key, pair.certificate.read_bytes())
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._refresh_tokens: dict[str, tuple[str, str]] = {}
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        if self.tls:
            self._wrap_tls()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(_POLL_INTERVAL,),
            name="hoist-token-server",
            daemon=True,
        )
        self._thread.start()

    def _wrap_tls(self) -> None:
        context = server_context(self.ca.issue_server("token-server"))
        # The handshake then runs in the handler's thread, so a stalled client cannot block accept.
        self._server.socket = context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/token"

    @property
    def rootcertbundle(self) -> Path:
        """The CA file the registry verifies token signatures against (and TLS clients trust)."""
        return self.ca.certificate

    def registry_auth(self) -> TokenAuth:
        """The ``auth: token`` settings of a registry that trusts this server's tokens."""
        return TokenAuth(self.realm, self.service, self.issuer, self.rootcertbundle)

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def issued(self) -> list[TokenRequest]:
        """The requests that were answered with a token."""
        return [request for request in self.requests if request.issued]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=_HANDLER_TIMEOUT)

    def mint(
        self,
        subject: str,
        scopes: Sequence[str] = (),
        *,
        issued_at: float | None = None,
        lifetime: float | None = None,
    ) -> str:
        """A token signed as the server signs them, without a request (e.g. an expired one)."""
        moment = time.time() if issued_at is None else issued_at
        return self._jwt(subject, parse_scopes(scopes), moment, lifetime)

    def _jwt(
        self, subject: str, granted: Sequence[Scope], issued_at: float, lifetime: float | None
    ) -> str:
        if lifetime is None:
            lifetime = self.lifetime
        expiry = issued_at + self.expires_in
        if lifetime is not None:
            expiry = math.ceil(issued_at + lifetime) - REGISTRY_LEEWAY
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": int(expiry),
            "nbf": int(issued_at),
            "iat": int(issued_at),
            "jti": secrets.token_hex(16),
            "access": [scope.claim() for scope in granted],
        }
        return self._signer.sign(claims)

    # What follows runs in the server's handler threads.

    def answer(self, call: TokenCall) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, JSON body and headers for one request; the request is recorded."""
        scopes = parse_scopes(call.values.get("scope", []))
        try:
            grant = self._authenticate(call)
        except _Refused as refused:
            self._record(call.record(scopes, refused.status))
            return refused.status, refused.body(), refused.headers()
        body, granted = self._token_response(grant, scopes)
        self._record(call.record(scopes, 200, granted, "refresh_token" in body))
        return 200, body, {}

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _authenticate(self, call: TokenCall) -> _Grant:
        if self.reject_all:
            raise _Refused(401, "UNAUTHORIZED", "authentication required")
        if call.method == "POST":
            return self._post_grant(call)
        return self._get_grant(call)

    def _get_grant(self, call: TokenCall) -> _Grant:
        if call.basic is None:
            if not self.anonymous:
                raise _Refused(401, "UNAUTHORIZED", "authentication required")
            return _Grant("")
        username, password = call.basic
        self._check_password(username, password)
        grant = _Grant(username)
        if _truthy(call.value("offline_token")):
            grant.refresh_token = self._new_refresh_token(username, call.value("service"))
        return grant

    def _post_grant(self, call: TokenCall) -> _Grant:
        grant_type, service = call.value("grant_type"), call.value("service")
        if not service or not call.value("client_id"):
            raise _Refused(400, "INVALID_REQUEST", "service and client_id are required")
        if grant_type == "refresh_token":
            refresh_token = call.value("refresh_token")
            return _Grant(self._redeem_refresh_token(refresh_token, service), refresh_token)
        if grant_type == "password":
            username = call.value("username")
            self._check_password(username, call.value("password"))
            grant = _Grant(username)
            if call.value("access_type") == "offline":
                grant.refresh_token = self._new_refresh_token(username, service)
            return grant
        raise _Refused(400, "UNSUPPORTED", "unknown grant_type value")

    def _check_password(self, username: str, password: str) -> None:
        expected = self.users.get(username)
        if expected is None or not secrets.compare_digest(expected.encode(), password.encode()):
            raise _Refused(401, "UNAUTHORIZED", "authentication required")

    def _new_refresh_token(self, subject: str, service: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._refresh_tokens[token] = (subject, service)
        return token

    def _redeem_refresh_token(self, token: str, service: str) -> str:
        with self._lock:
            subject, issued_for = self._refresh_tokens.get(token, ("", ""))
        if not subject or issued_for != service:
            raise _Refused(401, "UNAUTHORIZED", "invalid refresh token")
        return subject

    def _allowed_actions(self, subject: str, repository: str) -> set[str]:
        patterns = self.grants.get(subject, ALL_ACTIONS if subject in self.users else {})
        actions: set[str] = set()
        for pattern, allowed in patterns.items():
            if fnmatch.fnmatchcase(repository, pattern):
                actions.update(allowed)
        return actions

    def _grant(self, subject: str, requested: Sequence[Scope]) -> list[Scope]:
        """The requested scopes cut down to what ``subject`` may do (others are left out)."""
        granted = []
        for scope in requested:
            if scope.type != "repository":
                continue
            allowed = self._allowed_actions(subject, scope.name)
            actions = tuple(a for a in scope.actions if "*" in allowed or a in allowed)
            if actions:
                granted.append(Scope(scope.type, scope.name, actions))
        return granted

    def _token_response(
        self, grant: _Grant, scopes: Sequence[Scope]
    ) -> tuple[dict[str, Any], list[Scope]]:
        issued_at = time.time()
        granted = self._grant(grant.subject, scopes)
        token = self._jwt(grant.subject, granted, issued_at, None)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": _rfc3339(issued_at),
        }
        if grant.refresh_token:
            body["refresh_token"] = grant.refresh_token
        return body, granted


def _truthy(value: str) -> bool:
    return value.lower() in {"1", "t", "true", "yes"}


@dataclass(frozen=True)
class TokenCall:
    """A request to the realm, parsed: ``values`` are the query (GET) or the form (POST)."""

    method: str
    target: str
    values: Mapping[str, list[str]]
    basic: tuple[str, str] | None

    def value(self, name: str) -> str:
        return self.values.get(name, [""])[0]

    def record(
        self,
        scopes: Sequence[Scope],
        status: int,
        granted: Sequence[Scope] = (),
        refresh_token_issued: bool = False,
    ) -> TokenRequest:
        return TokenRequest(
            method=self.method,
            target=self.target,
            basic_user=self.basic[0] if self.basic else None,
            form={name: v[0] for name, v in self.values.items()} if self.method == "POST" else {},
            grant_type=self.value("grant_type"),
            service=self.value("service"),
            account=self.value("account") or self.value("username"),
            client_id=self.value("client_id"),
            offline_token=_truthy(self.value("offline_token"))
            or self.value("access_type") == "offline",
            scopes=tuple(str(scope) for scope in scopes),
            status=status,
            granted=tuple(str(scope) for scope in granted),
            refresh_token_issued=refresh_token_issued,
        )


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], tokens: TokenServer
    ) -> None:
        self.tokens = tokens
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that does not trust the certificate or hangs up is no fault of the server.
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Carries bytes only: ``TokenServer.answer`` decides."""

    server: _Server
    timeout = _HANDLER_TIMEOUT
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is ``TokenServer.requests``."""

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(_HANDLER_TIMEOUT)
            self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        self._reply(TokenCall("GET", self.path, query, self._basic()))

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), _MAX_BODY)
        form = parse_qs(self.rfile.read(length).decode(errors="replace"), keep_blank_values=True)
        self._reply(TokenCall("POST", self.path, form, self._basic()))

    def _basic(self) -> tuple[str, str] | None:
        return _basic_credentials(self.headers.get("Authorization", ""))

    def _reply(self, call: TokenCall) -> None:
        status, body, headers = self.server.tokens.answer(call)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def start_token_server(
    users: Mapping[str, str],
    *,
    ca: CertificateAuthority,
    grants: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    expires_in: int = 300,
    lifetime: float | None = None,
    tls: bool = False,
) -> TokenServer:
    """A running token server whose tokens (and, with ``tls``, its certificate) come from ``ca``."""
    return TokenServer(
        ca,
        users=dict(users),
        grants=dict(grants or {}),
        expires_in=expires_in,
        lifetime=lifetime,
        tls=tls,
    )
