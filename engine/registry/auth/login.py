"""``docker login`` as a flow: prove credentials against a registry before they are stored.

``GET /v2/`` unauthenticated to learn the challenge; then Basic → ``GET /v2/`` with Basic, or
Bearer → a token with no repository scope (``offline_token=true`` asks for a refresh token, or a
``refresh_token`` grant when only an identity token is known) → ``GET /v2/`` with the token.
A refresh token the server returns becomes the identity token to store instead of the password.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

from engine.errors import RegistryResponseError, UnauthorizedError
from engine.registry import protocol
from engine.registry.auth.challenge import BASIC, Challenge, preferred_challenge
from engine.registry.auth.challenge import response_challenges as _challenges
from engine.registry.auth.flow import token_endpoint
from engine.registry.auth.messages import (
    HttpRequest,
    HttpResponse,
    authorized,
    basic_authorization,
    bearer_authorization,
)
from engine.registry.auth.token import (
    Token,
    credential_secrets,
    parse_token_response,
    redact,
    token_request,
)
from engine.registry.auth_config import AuthConfig


@dataclass(frozen=True)
class LoginResult:
    """``identity_token``: a refresh token to store in place of the password, when one came."""

    identity_token: str = field(default="", repr=False)
    status: str = "Login Succeeded"


LoginFlow = Generator[HttpRequest, HttpResponse, LoginResult]


def _refusal(response: HttpResponse, url: str, credentials: AuthConfig) -> RegistryResponseError:
    """The registry's own error, typed as protocol.py types it, with every secret blanked."""
    error = protocol.decode_error(response.status, response.body, method="GET", url=url)
    message = str(error)
    if isinstance(error, UnauthorizedError) and not message.startswith("unauthorized"):
        said = message if protocol.parse_errors(response.body) else "authentication required"
        message = f"unauthorized: {said}"
    message = redact(message, credential_secrets(credentials))
    return type(error)(message, status=error.status, code=error.code, method="GET", url=url)


def _basic_authorization(credentials: AuthConfig) -> str:
    if not (credentials.username and credentials.password):
        raise UnauthorizedError("no basic auth credentials", status=401)
    return basic_authorization(credentials.username, credentials.password)


def _token(
    credentials: AuthConfig, challenge: Challenge, ping_url: str, client_id: str
) -> Generator[HttpRequest, HttpResponse, Token]:
    endpoint = token_endpoint(challenge, ping_url)
    request = token_request(
        endpoint,
        (),
        credentials,
        refresh_token=credentials.identity_token,
        client_id=client_id,
        offline=True,
    )
    response = yield request
    # The token is used once, right away: when it expires does not matter (hence now=0).
    return parse_token_response(
        response, 0.0, url=endpoint.realm, secrets=credential_secrets(credentials)
    )


def login_flow(credentials: AuthConfig, ping_url: str, *, client_id: str = "hoist") -> LoginFlow:
    """Check ``credentials`` against the registry whose ``/v2/`` is ``ping_url``."""
    probe = HttpRequest("GET", ping_url, {})
    response = yield probe
    if response.status == 200:
        return LoginResult()  # the registry asks for no credentials at all
    challenge = preferred_challenge(_challenges(response))
    if challenge is None:
        raise _refusal(response, ping_url, credentials)
    identity_token = ""
    if challenge.scheme == BASIC:
        authorization = _basic_authorization(credentials)
    elif credentials.registry_token:
        authorization = bearer_authorization(credentials.registry_token)
    else:
        token = yield from _token(credentials, challenge, ping_url, client_id)
        authorization = bearer_authorization(token.value)
        identity_token = token.refresh_token
    response = yield authorized(probe, authorization)
    if response.status != 200:
        raise _refusal(response, ping_url, credentials)
    return LoginResult(identity_token=identity_token)
