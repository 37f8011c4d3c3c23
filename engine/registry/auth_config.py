"""``AuthConfig``: credentials for one registry, as a value. A leaf: the auth flow and the pool
use it without importing the module that reads ``config.json`` and runs credential helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

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
