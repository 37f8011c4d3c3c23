"""``docker login`` and ``docker logout``: check credentials with a registry, store or erase."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from engine import docker_hub
from engine.registry import protocol
from engine.registry.auth import login_flow
from engine.registry.auth_config import AuthConfig
from engine.registry.credentials import DockerConfig
from engine.registry.pool import RegistryPool


@dataclass(frozen=True)
class LoginOutcome:
    domain: str
    status: str
    #: True when the secret went into config.json itself rather than a credential helper.
    stored_unencrypted: bool
    #: The refresh token the registry gave instead of keeping the password, if any.
    identity_token: str = ""


def login_domain(server: str | None) -> str:
    """The registry a login is for: ``https://host/v1/`` → ``host``; nothing → Docker Hub."""
    if not server:
        return docker_hub.DOMAIN
    host = urlsplit(server).netloc if "://" in server else server.split("/", 1)[0]
    return docker_hub.DOMAIN if host in docker_hub.ALIASES else host


async def check(pool: RegistryPool, server: str | None, credentials: AuthConfig) -> LoginOutcome:
    """Check ``credentials`` with the registry and keep them nowhere (a daemon's ``/auth``: its
    client stores them, and sends them with each push)."""
    domain = login_domain(server)
    client = await pool.connect(domain, credentials)
    result = await client.run(login_flow(credentials, protocol.ping_url(client.base)))
    return LoginOutcome(domain, result.status, False, result.identity_token)


async def login(
    pool: RegistryPool, config: DockerConfig, server: str | None, credentials: AuthConfig
) -> LoginOutcome:
    checked = await check(pool, server, credentials)
    if checked.identity_token:
        # As Docker: keep the refresh token the registry gave, not the password.
        credentials = AuthConfig(
            username=credentials.username, identity_token=checked.identity_token
        )
    unencrypted = await config.store(checked.domain, credentials)
    pool.use_credentials(checked.domain, credentials)
    return replace(checked, stored_unencrypted=unencrypted)


async def logout(config: DockerConfig, server: str | None) -> str:
    domain = login_domain(server)
    await config.erase(domain)
    return domain
