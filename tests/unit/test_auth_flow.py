"""The auth flow against an in-memory registry and token server: every step of the dance.

``World`` plays both servers by the distribution token spec; ``drive`` is the driver loop the
HTTP client runs, minus the network. Tokens, refresh tokens and expiry are all computed by the
fake, so each assertion checks what the flow asked for, not a value written into the test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
from multidict import CIMultiDict

from engine.errors import (
    RegistryResponseError,
    TooManyRequestsError,
    UnauthorizedError,
)
from engine.registry.auth import (
    Authenticator,
    HttpRequest,
    HttpResponse,
    LoginResult,
    login_flow,
    repository_scope,
)
from engine.registry.auth.token import Token
from engine.registry.auth_config import AuthConfig

ORIGIN = "https://registry.test"
REALM = "https://auth.test/token"
SERVICE = "registry.test"
USER = "alice"
PASSWORD = "s3cret-Pa55word"
IDENTITY = "identity-refresh-7f3a"
REGISTRY_TOKEN = "registry-token-91bc"
T0 = 1_700_000_000.0

PUSH = repository_scope("team/app")
MANIFEST = f"{ORIGIN}/v2/team/app/manifests/latest"

T = TypeVar("T")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _json(status: int, document: object) -> HttpResponse:
    return HttpResponse(
        status, CIMultiDict({"Content-Type": "application/json"}), json.dumps(document).encode()
    )


@dataclass
class World:
    """A registry at ORIGIN guarded by ``scheme``, and its token server at REALM."""

    scheme: str = "bearer"
    expires_in: int | None = 300
    issued_at: str | None = None
    hand_out_refresh_token: bool = False
    refuse_every_token: bool = False
    token_answer: HttpResponse | None = None  # forces the token endpoint's answer
    sent: list[HttpRequest] = field(default_factory=list)
    valid_tokens: dict[str, tuple[str, ...]] = field(default_factory=dict)
    refresh_tokens: set[str] = field(default_factory=lambda: {IDENTITY})

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        if request.url.startswith(REALM):
            return self.token_endpoint(request)
        return self.registry(request)

    @property
    def token_requests(self) -> list[HttpRequest]:
        return [r for r in self.sent if r.is_token_request]

    @property
    def registry_requests(self) -> list[HttpRequest]:
        return [r for r in self.sent if not r.is_token_request]

    def revoke_all(self) -> None:
        self.valid_tokens.clear()

    # -- the registry ---------------------------------------------------------------------------

    def registry(self, request: HttpRequest) -> HttpResponse:
        authorization = request.headers.get("Authorization", "")
        if self.scheme == "none" or self._accepts(authorization):
            return HttpResponse(200, CIMultiDict(), b"{}")
        return self._challenge(request)

    def _accepts(self, authorization: str) -> bool:
        if self.scheme == "basic":
            return authorization == _basic(USER, PASSWORD)
        token = authorization.removeprefix("Bearer ")
        return not self.refuse_every_token and token in self.valid_tokens

    def _challenge(self, request: HttpRequest) -> HttpResponse:
        if self.scheme == "basic":
            value = 'Basic realm="Registry Realm"'
        else:
            value = f'Bearer realm="{REALM}",service="{SERVICE}"'
            path = urlsplit(request.url).path
            if path != "/v2/":
                name = path.removeprefix("/v2/").split("/manifests/")[0].split("/blobs/")[0]
                value += f',scope="repository:{name}:pull"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        headers = CIMultiDict({"Content-Type": "application/json", "WWW-Authenticate": value})
        return HttpResponse(401, headers, json.dumps(body).encode())

    # -- the token server -----------------------------------------------------------------------

    def token_endpoint(self, request: HttpRequest) -> HttpResponse:
        if self.token_answer is not None:
            return self.token_answer
        if request.method == "GET":
            params = parse_qs(urlsplit(request.url).query)
            authorization = request.headers.get("Authorization")
            if authorization is not None and authorization != _basic(USER, PASSWORD):
                return _json(401, {"details": "incorrect username or password"})
            return self._issue(params.get("scope", []))
        form = parse_qs((request.body or b"").decode())
        grant = form["grant_type"][0]
        good = (
            form["refresh_token"][0] in self.refresh_tokens
            if grant == "refresh_token"
            else form["username"] == [USER] and form["password"] == [PASSWORD]
        )
        if not good:
            return _json(400, {"error": "invalid_grant", "error_description": "bad grant"})
        return self._issue(form.get("scope", [""])[0].split())

    def _issue(self, scopes: list[str]) -> HttpResponse:
        token = f"tok-{len(self.valid_tokens) + 1}-{len(self.sent)}"
        self.valid_tokens[token] = tuple(scopes)
        document: dict[str, object] = {"token": token}
        if self.expires_in is not None:
            document["expires_in"] = self.expires_in
        if self.issued_at is not None:
            document["issued_at"] = self.issued_at
        if self.hand_out_refresh_token:
            refresh = f"refresh-{token}"
            self.refresh_tokens.add(refresh)
            document["refresh_token"] = refresh
        return _json(200, document)


def drive(flow: Generator[HttpRequest, HttpResponse, T], world: World) -> T:
    """The driver loop: send what the flow yields, hand back the answer, return its result."""
    request = next(flow)
    while True:
        try:
            request = flow.send(world(request))
        except StopIteration as stop:
            result: T = stop.value
            return result


def put_manifest(url: str = MANIFEST) -> HttpRequest:
    return HttpRequest(
        "PUT", url, {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}
    )


def push(auth: Authenticator, world: World, url: str = MANIFEST) -> HttpResponse:
    return drive(auth.flow(put_manifest(url), [PUSH]), world)


def query(request: HttpRequest) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.url).query)


def form(request: HttpRequest) -> dict[str, list[str]]:
    return parse_qs((request.body or b"").decode(), keep_blank_values=True)


def ping(auth: Authenticator, world: World) -> None:
    auth.observe_challenge(world(HttpRequest("GET", f"{ORIGIN}/v2/", {})))


alice = AuthConfig(username=USER, password=PASSWORD)


# -- no auth, Basic ---------------------------------------------------------------------------


def test_an_open_registry_gets_the_request_as_is() -> None:
    world = World(scheme="none")
    response = push(Authenticator(alice), world)
    assert response.status == 200
    assert world.sent == [put_manifest()]


def test_basic_challenge_is_answered_once_then_pre_authorised() -> None:
    world, auth = World(scheme="basic"), Authenticator(alice)
    assert push(auth, world).status == 200
    first, retry = world.sent
    assert "Authorization" not in first.headers
    assert retry.headers["Authorization"] == _basic(USER, PASSWORD)
    assert retry.body is None  # the driver re-attaches the caller's own body
    assert push(auth, world).status == 200
    assert len(world.sent) == 3  # the challenge is known now: no second 401


def test_basic_challenge_without_credentials_returns_the_401() -> None:
    world = World(scheme="basic")
    response = push(Authenticator(AuthConfig()), world)
    assert response.status == 401
    assert len(world.sent) == 1


def test_wrong_basic_password_is_retried_once_then_returned() -> None:
    world = World(scheme="basic")
    auth = Authenticator(AuthConfig(username=USER, password="wrong"))
    assert push(auth, world).status == 401
    assert push(auth, world).status == 401
    # One retry in the first flow; the second flow pre-authorises and does not repeat itself.
    assert len(world.sent) == 3


# -- Bearer: which token request ----------------------------------------------------------------


def test_bearer_anonymous_token_by_get_without_credentials() -> None:
    world = World()
    assert push(Authenticator(AuthConfig()), world).status == 200
    (token_request,) = world.token_requests
    assert token_request.method == "GET"
    assert "Authorization" not in token_request.headers
    params = query(token_request)
    assert params["service"] == [SERVICE]
    assert params["scope"] == [PUSH]
    assert "account" not in params
    retry = world.registry_requests[-1]
    assert retry.headers["Authorization"] == f"Bearer {next(iter(world.valid_tokens))}"


def test_bearer_with_password_gets_token_by_get_with_basic_and_account() -> None:
    world = World()
    assert push(Authenticator(alice), world).status == 200
    (token_request,) = world.token_requests
    assert token_request.method == "GET"
    assert token_request.headers["Authorization"] == _basic(USER, PASSWORD)
    assert query(token_request)["account"] == [USER]
    assert "offline_token" not in query(token_request)


def test_bearer_with_identity_token_posts_a_refresh_token_grant() -> None:
    world = World()
    auth = Authenticator(AuthConfig(username="<token>", identity_token=IDENTITY))
    assert push(auth, world).status == 200
    (token_request,) = world.token_requests
    assert token_request.method == "POST"
    assert token_request.url == REALM
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in token_request.headers
    assert form(token_request) == {
        "grant_type": ["refresh_token"],
        "refresh_token": [IDENTITY],
        "service": [SERVICE],
        "scope": [PUSH],
        "client_id": ["hoist"],
    }


def test_identity_token_wins_over_a_password() -> None:
    world = World()
    creds = AuthConfig(username=USER, password=PASSWORD, identity_token=IDENTITY)
    assert push(Authenticator(creds, client_id="other-client"), world).status == 200
    (token_request,) = world.token_requests
    assert form(token_request)["grant_type"] == ["refresh_token"]
    assert form(token_request)["client_id"] == ["other-client"]


def test_force_oauth_posts_a_password_grant() -> None:
    world = World()
    assert push(Authenticator(alice, force_oauth=True), world).status == 200
    (token_request,) = world.token_requests
    assert form(token_request) == {
        "grant_type": ["password"],
        "username": [USER],
        "password": [PASSWORD],
        "access_type": ["offline"],
        "service": [SERVICE],
        "scope": [PUSH],
        "client_id": ["hoist"],
    }


def test_registry_token_is_the_bearer_as_is() -> None:
    world = World()
    world.valid_tokens[REGISTRY_TOKEN] = ()
    auth = Authenticator(AuthConfig(registry_token=REGISTRY_TOKEN))
    assert push(auth, world).status == 200
    assert world.token_requests == []
    assert world.sent[-1].headers["Authorization"] == f"Bearer {REGISTRY_TOKEN}"


def test_a_refused_registry_token_is_not_resent() -> None:
    world = World()
    auth = Authenticator(AuthConfig(registry_token=REGISTRY_TOKEN))
    ping(auth, world)
    assert push(auth, world).status == 401
    assert len(world.registry_requests) == 2  # the ping and one attempt


def test_relative_realm_is_resolved_against_the_registry() -> None:
    auth = Authenticator(AuthConfig())
    challenge = CIMultiDict({"WWW-Authenticate": 'Bearer realm="/token",service="s"'})
    auth.observe_challenge(HttpResponse(401, challenge, b""))
    token_request = next(auth.flow(put_manifest()))
    assert token_request.is_token_request
    assert token_request.url == f"{ORIGIN}/token?service=s"


@pytest.mark.parametrize("realm", ["ftp://auth.test/token", "file:///etc/passwd"])
def test_a_realm_that_is_not_http_is_refused(realm: str) -> None:
    auth = Authenticator(alice)
    challenge = CIMultiDict({"WWW-Authenticate": f'Bearer realm="{realm}"'})
    auth.observe_challenge(HttpResponse(401, challenge, b""))
    with pytest.raises(UnauthorizedError):
        drive(auth.flow(put_manifest()), World())


# -- scopes -------------------------------------------------------------------------------------


def test_token_scopes_join_the_challenge_the_push_and_the_mount_source() -> None:
    world = World()
    mount = f"{ORIGIN}/v2/team/app/blobs/uploads/?mount=sha256:abc&from=library/base"
    request = HttpRequest("POST", mount, {})
    assert drive(Authenticator(alice).flow(request, [PUSH]), world).status == 200
    (token_request,) = world.token_requests
    # The challenge asked for repository:team/app:pull; push,pull already holds it.
    assert query(token_request)["scope"] == [PUSH, "repository:library/base:pull"]


def test_challenge_scope_alone_when_the_caller_names_none() -> None:
    world = World()
    assert drive(Authenticator(alice).flow(put_manifest()), world).status == 200
    assert query(world.token_requests[0])["scope"] == ["repository:team/app:pull"]


# -- the token cache ----------------------------------------------------------------------------


def test_one_token_serves_many_requests() -> None:
    world = World()
    auth = Authenticator(alice, clock=Clock())
    ping(auth, world)
    for digest in range(6):
        url = f"{ORIGIN}/v2/team/app/blobs/sha256:{digest:064x}"
        assert drive(auth.flow(HttpRequest("HEAD", url, {}), [PUSH]), world).status == 200
    assert push(auth, world).status == 200
    assert len(world.token_requests) == 1
    # After the ping, every request went pre-authorised: no 401 along the way.
    assert len(world.registry_requests) == 1 + 7


def test_a_new_scope_set_gets_its_own_token() -> None:
    world = World()
    auth = Authenticator(alice, clock=Clock())
    ping(auth, world)
    push(auth, world)
    mount = f"{ORIGIN}/v2/team/app/blobs/uploads/?mount=sha256:abc&from=library/base"
    drive(auth.flow(HttpRequest("POST", mount, {}), [PUSH]), world)
    push(auth, world)
    assert len(world.token_requests) == 2


@pytest.mark.parametrize(
    ("expires_in", "reused_at", "refetched_at"),
    [
        (60, 29, 45),  # refreshed 30 s before expiry: t+45 fetches anew
        (300, 269, 271),
        (None, 29, 31),  # missing: 60 s
        (10, 29, 31),  # under 60: 60 s
    ],
)
def test_token_refreshed_before_expiry(
    expires_in: int | None, reused_at: float, refetched_at: float
) -> None:
    world, clock = World(expires_in=expires_in), Clock()
    auth = Authenticator(alice, clock=clock)
    ping(auth, world)
    push(auth, world)
    clock.now = T0 + reused_at
    push(auth, world)
    assert len(world.token_requests) == 1
    clock.now = T0 + refetched_at
    push(auth, world)
    assert len(world.token_requests) == 2
    assert len(set(world.valid_tokens)) == 2


def test_issued_at_is_honoured() -> None:
    issued = datetime.fromtimestamp(T0 - 20, tz=UTC).isoformat().replace("+00:00", "Z")
    world, clock = World(expires_in=60, issued_at=issued), Clock()
    auth = Authenticator(alice, clock=clock)
    ping(auth, world)
    push(auth, world)
    clock.now = T0 + 5  # issued at t-20, good until t+40, refreshed from t+10
    push(auth, world)
    assert len(world.token_requests) == 1
    clock.now = T0 + 15
    push(auth, world)
    assert len(world.token_requests) == 2


def test_a_returned_refresh_token_is_used_for_later_refreshes() -> None:
    world, clock = World(hand_out_refresh_token=True), Clock()
    auth = Authenticator(alice, clock=clock)
    ping(auth, world)
    push(auth, world)
    first = world.token_requests[0]
    assert first.method == "GET"
    clock.now = T0 + 600
    push(auth, world)
    second = world.token_requests[1]
    assert second.method == "POST"
    assert form(second)["grant_type"] == ["refresh_token"]
    assert form(second)["refresh_token"] == [f"refresh-{next(iter(world.valid_tokens))}"]


def test_a_stale_refresh_token_falls_back_to_the_credentials() -> None:
    world, clock = World(hand_out_refresh_token=True), Clock()
    auth = Authenticator(alice, clock=clock)
    ping(auth, world)
    push(auth, world)
    world.refresh_tokens.clear()  # the token server forgot every refresh token it handed out
    clock.now = T0 + 600
    assert push(auth, world).status == 200
    methods = [r.method for r in world.token_requests]
    assert methods == ["GET", "POST", "GET"]


def test_forget_tokens_fetches_anew() -> None:
    world = World()
    auth = Authenticator(alice, clock=Clock())
    ping(auth, world)
    push(auth, world)
    auth.forget_tokens()
    push(auth, world)
    assert len(world.token_requests) == 2


# -- 401 in the middle of a push -------------------------------------------------------------


def test_a_refused_cached_token_is_fetched_anew_and_the_request_retried_once() -> None:
    world = World(expires_in=3600)
    auth = Authenticator(alice, clock=Clock())
    ping(auth, world)
    push(auth, world)
    world.revoke_all()  # the server expired the token early (moby#33558)
    before = len(world.sent)
    assert push(auth, world).status == 200
    attempt, token_request, retry = world.sent[before:]
    assert attempt.headers["Authorization"] != retry.headers["Authorization"]
    assert token_request.is_token_request
    assert retry.headers["Authorization"] == f"Bearer {next(iter(world.valid_tokens))}"
    # The fresh token is cached: the next request needs no token request.
    push(auth, world)
    assert len(world.token_requests) == 2


def test_a_second_401_is_returned() -> None:
    world = World(refuse_every_token=True)
    auth = Authenticator(alice, clock=Clock())
    ping(auth, world)
    before = len(world.sent)
    response = push(auth, world)
    assert response.status == 401
    kinds = [r.is_token_request for r in world.sent[before:]]
    assert kinds == [True, False, True, False]  # token, attempt, new token, one retry


# -- token endpoint errors ----------------------------------------------------------------------


def _secrets_absent(text: str) -> None:
    for secret in (
        PASSWORD,
        IDENTITY,
        REGISTRY_TOKEN,
        base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    ):
        assert secret not in text


def test_token_endpoint_401_raises_unauthorized_without_the_password() -> None:
    world = World()
    auth = Authenticator(AuthConfig(username=USER, password="not-" + PASSWORD))
    with pytest.raises(UnauthorizedError) as caught:
        push(auth, world)
    assert str(caught.value) == "unauthorized: incorrect username or password"
    assert caught.value.status == 401
    _secrets_absent(str(caught.value) + repr(caught.value) + caught.value.url)


@pytest.mark.parametrize(
    ("creds", "echo"),
    [
        (alice, {"details": f"bad password {PASSWORD} for {USER}"}),
        (alice, {"errors": [{"code": "UNAUTHORIZED", "message": f"got {PASSWORD}"}]}),
        (alice, {"message": f"Authorization: {_basic(USER, PASSWORD)}"}),
        (
            AuthConfig(username="<token>", identity_token=IDENTITY),
            {"error": "invalid_grant", "error_description": f"refresh token {IDENTITY} revoked"},
        ),
    ],
)
def test_a_token_server_echoing_a_secret_does_not_leak_it(
    creds: AuthConfig, echo: dict[str, object]
) -> None:
    world = World(token_answer=_json(401, echo))
    with pytest.raises(UnauthorizedError) as caught:
        push(Authenticator(creds), world)
    assert str(caught.value).startswith("unauthorized: ")
    assert "***" in str(caught.value)
    _secrets_absent(str(caught.value) + repr(caught.value))


@pytest.mark.parametrize(
    ("answer", "error", "not_error"),
    [
        (HttpResponse(403, {}, b"<html>no</html>"), UnauthorizedError, None),
        (HttpResponse(429, {}, b""), TooManyRequestsError, None),
        (HttpResponse(503, {}, b""), RegistryResponseError, UnauthorizedError),
        (_json(200, {"expires_in": 60}), UnauthorizedError, None),
        (HttpResponse(200, {}, b"not json"), UnauthorizedError, None),
    ],
)
def test_token_endpoint_failures(
    answer: HttpResponse, error: type[Exception], not_error: type[Exception] | None
) -> None:
    world = World(token_answer=answer)
    with pytest.raises(error) as caught:
        push(Authenticator(alice), world)
    if not_error is not None:
        assert not isinstance(caught.value, not_error)
    _secrets_absent(str(caught.value))


# -- origins ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://storage.test/upload/abc?sig=1",
        "http://registry.test/v2/team/app/blobs/uploads/1",  # same host, another scheme
        "https://registry.test:8443/v2/team/app/blobs/uploads/1",  # same host, another port
        "https://registry.test.evil.test/v2/team/app/blobs/uploads/1",  # a longer host name
        "https://registry.test@evil.test/v2/team/app/blobs/uploads/1",  # the host after "@"
        "https://registry.test:443.evil.test/v2/team/app/blobs/uploads/1",  # no port at all
    ],
)
def test_authorization_never_goes_to_another_origin(elsewhere: str) -> None:
    world = World(scheme="basic")
    auth = Authenticator(alice, origin=ORIGIN)
    push(auth, world)  # the Basic challenge is known from here on
    leaked = HttpRequest("PATCH", elsewhere, {"authorization": _basic(USER, PASSWORD), "X-A": "1"})
    response = drive(auth.flow(leaked, [PUSH]), world)
    assert response.status == 401  # the fake refuses it; the flow does not answer for another host
    sent = world.sent[-1]
    assert sent.url == elsewhere
    assert {k.lower() for k in sent.headers} == {"x-a"}


def test_origin_defaults_to_the_first_request() -> None:
    world = World(scheme="basic")
    auth = Authenticator(alice)
    push(auth, world)
    drive(auth.flow(put_manifest("https://cdn.test/v2/team/app/manifests/latest")), world)
    assert "Authorization" not in world.sent[-1].headers


# -- secrets in reprs ---------------------------------------------------------------------------


def test_no_secret_in_any_repr() -> None:
    world = World(hand_out_refresh_token=True)
    creds = AuthConfig(username=USER, password=PASSWORD, identity_token=IDENTITY)
    auth = Authenticator(creds, clock=Clock())
    ping(auth, world)
    push(auth, world)
    texts = [repr(auth), str(auth)] + [repr(r) + str(r) for r in world.sent]
    texts.append(repr(Token(value=REGISTRY_TOKEN, expires_at=T0, refresh_token=IDENTITY)))
    texts.append(repr(LoginResult(identity_token=IDENTITY)))
    issued = list(world.valid_tokens)
    for text in texts:
        _secrets_absent(text)
        for token in issued:
            assert token not in text
    assert "***" in repr(world.sent[-1])  # the Authorization header is masked, not dropped


# -- login --------------------------------------------------------------------------------------


def test_login_basic_success() -> None:
    world = World(scheme="basic")
    result = drive(login_flow(alice, f"{ORIGIN}/v2/"), world)
    assert result == LoginResult()
    assert result.status == "Login Succeeded"
    assert world.sent[-1].headers["Authorization"] == _basic(USER, PASSWORD)


def test_login_basic_wrong_password() -> None:
    world = World(scheme="basic")
    wrong = AuthConfig(username=USER, password="not-" + PASSWORD)
    with pytest.raises(UnauthorizedError) as caught:
        drive(login_flow(wrong, f"{ORIGIN}/v2/"), world)
    assert str(caught.value) == "unauthorized: authentication required"
    assert "not-" + PASSWORD not in repr(caught.value)


def test_login_basic_without_password_is_refused() -> None:
    with pytest.raises(UnauthorizedError):
        drive(login_flow(AuthConfig(username=USER), f"{ORIGIN}/v2/"), World(scheme="basic"))


def test_login_bearer_asks_for_an_offline_token_and_keeps_the_refresh_token() -> None:
    world = World(hand_out_refresh_token=True)
    result = drive(login_flow(alice, f"{ORIGIN}/v2/"), world)
    (token_request,) = world.token_requests
    params = query(token_request)
    assert token_request.method == "GET"
    assert token_request.headers["Authorization"] == _basic(USER, PASSWORD)
    assert params["account"] == [USER]
    assert params["offline_token"] == ["true"]
    assert params["client_id"] == ["hoist"]
    assert "scope" not in params
    token = next(iter(world.valid_tokens))
    assert world.sent[-1].headers["Authorization"] == f"Bearer {token}"
    assert result.identity_token == f"refresh-{token}"
    assert IDENTITY not in repr(result) and result.identity_token not in repr(result)


def test_login_bearer_without_refresh_token_stores_none() -> None:
    result = drive(login_flow(alice, f"{ORIGIN}/v2/"), World())
    assert result.identity_token == ""


def test_login_with_identity_token_posts_a_refresh_grant() -> None:
    world = World()
    creds = AuthConfig(username="<token>", identity_token=IDENTITY)
    result = drive(login_flow(creds, f"{ORIGIN}/v2/"), world)
    (token_request,) = world.token_requests
    assert form(token_request) == {
        "grant_type": ["refresh_token"],
        "refresh_token": [IDENTITY],
        "service": [SERVICE],
        "scope": [""],
        "client_id": ["hoist"],
    }
    assert result.status == "Login Succeeded"


def test_login_bearer_wrong_password() -> None:
    wrong = AuthConfig(username=USER, password="not-" + PASSWORD)
    with pytest.raises(UnauthorizedError) as caught:
        drive(login_flow(wrong, f"{ORIGIN}/v2/"), World())
    assert "incorrect username or password" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_login_to_an_open_registry_succeeds_in_one_request() -> None:
    world = World(scheme="none")
    assert drive(login_flow(alice, f"{ORIGIN}/v2/"), world) == LoginResult()
    assert len(world.sent) == 1


def test_login_to_something_that_is_not_a_registry() -> None:
    def not_found(request: HttpRequest) -> HttpResponse:
        return HttpResponse(404, {}, b"<html>404</html>")

    flow = login_flow(alice, f"{ORIGIN}/v2/")
    next(flow)
    with pytest.raises(RegistryResponseError) as caught:
        flow.send(not_found(put_manifest()))
    assert caught.value.status == 404
    assert not isinstance(caught.value, UnauthorizedError)
