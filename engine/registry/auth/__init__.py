"""Registry authentication as pure flows: challenges, scopes, bearer tokens, login.

Nothing here does I/O. A driver (engine/registry/client.py) sends the requests a flow yields and
sends back the responses; see ``Authenticator.flow`` and ``login_flow``.
"""

from engine.registry.auth.challenge import Challenge, parse_challenges
from engine.registry.auth.flow import Authenticator, Flow
from engine.registry.auth.login import LoginFlow, LoginResult, login_flow
from engine.registry.auth.messages import HttpRequest, HttpResponse
from engine.registry.auth.scope import merge_scopes, repository_scope

__all__ = [
    "Authenticator",
    "Challenge",
    "Flow",
    "HttpRequest",
    "HttpResponse",
    "LoginFlow",
    "LoginResult",
    "login_flow",
    "merge_scopes",
    "parse_challenges",
    "repository_scope",
]
