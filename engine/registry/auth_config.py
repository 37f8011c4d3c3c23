"""``AuthConfig``: credentials for one registry, as a value, and as the Docker Engine API's
``X-Registry-Auth`` header carries them. A leaf: the auth flow, the pool and ``hoist push``'s
client of ``hoist serve`` use it without importing the module that reads ``config.json`` and
runs credential helpers."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, fields

_HIDDEN = "***"


@dataclass(frozen=True)
class AuthConfig:
    """Credentials for one registry, as Docker's ``types.AuthConfig`` carries them.

    ``identity_token`` is an OAuth2 refresh token; ``registry_token`` a bearer token used as is.
    The repr shows ``***`` for every secret that is set, so a credential never reaches a log.
    """

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)
    server_address: str = ""

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
    document = {_wire_name(f.name): getattr(auth, f.name) for f in fields(auth)}
    set_fields = {key: value for key, value in document.items() if value}
    return base64.urlsafe_b64encode(json.dumps(set_fields).encode()).decode()


def from_registry_auth(header: str | None) -> AuthConfig:
    """``X-Registry-Auth``: base64url (padded or not) of a JSON AuthConfig; empty is anonymous.

    Raises ValueError with a message that never quotes the header (it holds a password).
    """
    if header is None or not header.strip():
        return AuthConfig()
    text = header.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ValueError("invalid X-Registry-Auth header: not base64url-encoded JSON") from None
    return from_json(document)


def from_json(document: object, what: str = "X-Registry-Auth header") -> AuthConfig:
    """Docker's AuthConfig as JSON (decoded) as credentials; a ValueError naming ``what`` (the
    header, ``POST /auth``'s body) otherwise, which never quotes the document."""
    if not isinstance(document, dict):
        raise ValueError(f"invalid {what}: not a JSON object")
    values = {f.name: document.get(_wire_name(f.name)) for f in fields(AuthConfig)}
    if not all(value is None or isinstance(value, str) for value in values.values()):
        raise ValueError(f"invalid {what}: a field is not a string")
    return AuthConfig(**{name: value or "" for name, value in values.items()})
