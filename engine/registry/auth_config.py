"""``AuthConfig``: credentials for one registry, as a value, and as the Docker Engine API's
headers carry them (``X-Registry-Auth`` one, ``X-Registry-Config`` one per registry). A leaf:
the auth flow, the pool and ``hoist push``'s client of ``hoist serve`` use it without importing
the module that reads ``config.json`` and runs credential helpers."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from engine.value import Value

_HIDDEN = "***"


class AuthConfig(Value):
    """Credentials for one registry, as Docker's ``types.AuthConfig`` carries them.

    ``identity_token`` is an OAuth2 refresh token; ``registry_token`` a bearer token used as is.
    The repr shows ``***`` for every secret that is set, so a credential never reaches a log.
    """

    __slots__ = ("identity_token", "password", "registry_token", "server_address", "username")
    username: str
    password: str
    identity_token: str
    registry_token: str
    server_address: str

    def __init__(
        self,
        username: str = "",
        password: str = "",
        identity_token: str = "",
        registry_token: str = "",
        server_address: str = "",
    ) -> None:
        super().__init__(username, password, identity_token, registry_token, server_address)

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def __repr__(self) -> str:
        secrets = ("password", "identity_token", "registry_token")
        shown = [f"username={self.username!r}"]
        shown += [f"{name}={_HIDDEN!r}" for name in secrets if getattr(self, name)]
        shown.append(f"server_address={self.server_address!r}")
        return f"AuthConfig({', '.join(shown)})"

    __str__ = __repr__


def _wire_name(name: str) -> str:
    """Docker's JSON key of a field: ``identity_token`` → ``identitytoken``."""
    return name.replace("_", "")


def to_registry_auth(auth: AuthConfig) -> str:
    """The ``X-Registry-Auth`` header the docker CLI sends: base64url of Docker's AuthConfig
    JSON, the fields that are set."""
    return _to_header(_to_json(auth))


def to_registry_config(by_registry: Mapping[str, AuthConfig]) -> str:
    """The ``X-Registry-Config`` header (``docker build``'s): base64url of a JSON object of
    Docker's AuthConfigs keyed by registry."""
    return _to_header({registry: _to_json(auth) for registry, auth in by_registry.items()})


def from_registry_auth(header: str | None) -> AuthConfig:
    """``X-Registry-Auth``: base64url (padded or not) of a JSON AuthConfig; empty is anonymous.

    Raises ValueError with a message that never quotes the header (it holds a password).
    """
    if header is None or not header.strip():
        return AuthConfig()
    return from_json(_from_header(header, "X-Registry-Auth"))


def from_registry_config(header: str | None) -> dict[str, AuthConfig]:
    """``X-Registry-Config``: credentials by registry; empty is none. Raises ValueError as
    ``from_registry_auth`` does."""
    if header is None or not header.strip():
        return {}
    document = _from_header(header, "X-Registry-Config")
    if not isinstance(document, dict):
        raise ValueError("invalid X-Registry-Config header: not a JSON object")
    return {
        str(registry): from_json(auth, "X-Registry-Config header")
        for registry, auth in document.items()
    }


def _to_json(auth: AuthConfig) -> dict[str, str]:
    document = {_wire_name(name): getattr(auth, name) for name in AuthConfig._fields}
    return {key: value for key, value in document.items() if value}


def _to_header(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


def _from_header(header: str, name: str) -> object:
    text = header.strip()
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError(f"invalid {name} header: not base64url-encoded JSON") from None


def from_json(document: object, what: str = "X-Registry-Auth header") -> AuthConfig:
    """Docker's AuthConfig as JSON (decoded) as credentials; a ValueError naming ``what`` (the
    header, ``POST /auth``'s body) otherwise, which never quotes the document."""
    if not isinstance(document, dict):
        raise ValueError(f"invalid {what}: not a JSON object")
    values = {name: document.get(_wire_name(name)) for name in AuthConfig._fields}
    if not all(value is None or isinstance(value, str) for value in values.values()):
        raise ValueError(f"invalid {what}: a field is not a string")
    return AuthConfig(**{name: value or "" for name, value in values.items()})
