"""The auth flow: a generator that turns one request into the requests that get it answered.

Like httpx's ``auth_flow``, ``Authenticator.flow`` yields each request for a driver to send and
is sent each response back; it returns the caller's final response. It does no I/O itself, so
every step of the challenge → token → retry dance is testable without a network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from urllib.parse import urljoin, urlsplit

from engine.errors import UnauthorizedError
from engine.registry.auth.challenge import (
    BASIC,
    BEARER,
    Challenge,
    preferred_challenge,
    registry_wide,
    response_challenges,
)
from engine.registry.auth.messages import (
    HttpRequest,
    HttpResponse,
    authorization_of,
    authorized,
    basic_authorization,
    bearer_authorization,
)
from engine.registry.auth.scope import merge_scopes, mount_source_scopes, scope_key
from engine.registry.auth.token import (
    Token,
    TokenCache,
    TokenEndpoint,
    TokenKey,
    credential_secrets,
    parse_token_response,
    token_request,
)
from engine.registry.auth_config import AuthConfig
from engine.registry.protocol import origin_prefix, same_origin

#: What a flow is: yields requests, is sent responses, returns the caller's final response.
Flow = Generator[HttpRequest, HttpResponse, HttpResponse]


def token_endpoint(challenge: Challenge, origin: str) -> TokenEndpoint:
    """The realm of a Bearer challenge, resolved against the registry (a realm may be relative)."""
    realm = urljoin(origin, challenge.get("realm"))
    if urlsplit(realm).scheme not in ("http", "https"):
        raise UnauthorizedError("invalid token auth challenge realm", status=401, url=origin)
    return TokenEndpoint(realm=realm, service=challenge.get("service"))


class Authenticator:
    """One per registry host and set of credentials; holds the token cache and the challenge.

    ``origin`` (scheme://host[:port]) is the registry this authenticator may send credentials
    to; when not given, it is the origin of the first request it sees. ``force_oauth`` makes a
    username and password use the OAuth2 password grant instead of the GET endpoint.
    """

    def __init__(
        self,
        credentials: AuthConfig,
        *,
        clock: Callable[[], float] = time.time,
        client_id: str = "hoist",
        origin: str | None = None,
        force_oauth: bool = False,
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._client_id = client_id
        self._origin = origin
        self._origin_prefix: str | None = None
        self._force_oauth = force_oauth
        self._challenge: Challenge | None = None
        self._tokens = TokenCache()
        # Refresh tokens the token server handed back, by (realm, service), as Docker keeps them.
        self._refresh_tokens: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        scheme = self._challenge.scheme if self._challenge else None
        return (
            f"Authenticator(origin={self._origin!r}, credentials={self._credentials!r}, "
            f"challenge={scheme!r}, tokens={self._tokens!r})"
        )

    def observe_challenge(self, response: HttpResponse) -> None:
        """Remember the registry's challenge (from the ``/v2/`` ping, say) to pre-authorise."""
        challenge = preferred_challenge(response_challenges(response))
        if challenge is not None:
            self._challenge = registry_wide(challenge)

    def forget_tokens(self) -> None:
        self._tokens.clear()
        self._refresh_tokens.clear()

    def flow(self, request: HttpRequest, scopes: Sequence[str] = ()) -> Flow:
        """Send ``request`` authorised; on a 401 with a challenge, authorise anew and retry once."""
        if not self._owns(request.url):
            # Another host (a redirect, a storage backend's upload Location): never credentials.
            return (yield authorized(request, None))
        attempt = yield from self._authorize(request, self._challenge, scopes)
        response = yield attempt
        challenge = preferred_challenge(response_challenges(response))
        if challenge is None:
            return response
        self._challenge = registry_wide(challenge)
        self._drop_refused(attempt)
        retry = yield from self._authorize(request, challenge, scopes)
        if authorization_of(retry) in (None, authorization_of(attempt)):
            return response  # nothing new to offer: the same refusal would come back
        return (yield retry)

    def _owns(self, url: str) -> bool:
        if self._origin is None:
            self._origin = url
        if self._origin_prefix is None:
            self._origin_prefix = origin_prefix(self._origin)
        return url.startswith(self._origin_prefix) or same_origin(self._origin, url)

    def _drop_refused(self, attempt: HttpRequest) -> None:
        sent = authorization_of(attempt) or ""
        scheme, _, value = sent.partition(" ")
        if scheme.lower() == BEARER and value:
            self._tokens.discard(value)

    def _authorize(
        self, request: HttpRequest, challenge: Challenge | None, scopes: Sequence[str]
    ) -> Generator[HttpRequest, HttpResponse, HttpRequest]:
        """``request`` with the Authorization header ``challenge`` asks for, when there is one.

        ``scopes``: what the caller asks a token for; a mount's source repository is added
        here, where a token is wanted (taking the URL apart for every request of an anonymous
        or Basic registry cost a batch of mounts about 2 % of its event loop's time)."""
        if challenge is None:
            return request
        if challenge.scheme == BASIC:
            return self._basic(request)
        wanted = merge_scopes(scopes, mount_source_scopes(request.url))
        token = yield from self._bearer_token(challenge, wanted)
        return authorized(request, bearer_authorization(token))

    def _basic(self, request: HttpRequest) -> HttpRequest:
        credentials = self._credentials
        if not (credentials.username and credentials.password):
            return request
        return authorized(request, basic_authorization(credentials.username, credentials.password))

    def _bearer_token(
        self, challenge: Challenge, scopes: Sequence[str]
    ) -> Generator[HttpRequest, HttpResponse, str]:
        if self._credentials.registry_token:
            return self._credentials.registry_token  # given as is: nothing to fetch
        endpoint = token_endpoint(challenge, self._origin or "")
        wanted = merge_scopes(scopes, challenge.get("scope").split())
        key: TokenKey = (endpoint.realm, endpoint.service, scope_key(wanted))
        cached = self._tokens.get(key, self._clock())
        if cached is not None:
            return cached.value
        token = yield from self._fetch_token(endpoint, wanted)
        self._tokens.put(key, token)
        return token.value

    def _fetch_token(
        self, endpoint: TokenEndpoint, scopes: Sequence[str]
    ) -> Generator[HttpRequest, HttpResponse, Token]:
        learned = self._refresh_tokens.get((endpoint.realm, endpoint.service), "")
        response = yield self._token_request(endpoint, scopes, learned)
        if learned and response.status != 200 and response.status < 500:
            # A refresh token the server gave us went stale: fall back to the credentials once.
            del self._refresh_tokens[(endpoint.realm, endpoint.service)]
            response = yield self._token_request(endpoint, scopes, "")
        secrets = [*self._secrets(), learned]
        token = parse_token_response(response, self._clock(), url=endpoint.realm, secrets=secrets)
        if token.refresh_token:
            self._refresh_tokens[(endpoint.realm, endpoint.service)] = token.refresh_token
        return token

    def _token_request(
        self, endpoint: TokenEndpoint, scopes: Sequence[str], learned: str
    ) -> HttpRequest:
        return token_request(
            endpoint,
            scopes,
            self._credentials,
            refresh_token=learned or self._credentials.identity_token,
            client_id=self._client_id,
            force_oauth=self._force_oauth,
        )

    def _secrets(self) -> list[str]:
        return [*credential_secrets(self._credentials), *self._refresh_tokens.values()]
