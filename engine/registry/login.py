"""``docker login`` and ``docker logout``: check credentials with a registry, store or erase."""

from __future__ import annotations

from dataclasses import dataclass
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


def login_domain(server: str | None) -> str:
    """The registry a login is for: ``https://host/v1/`` → ``host``; nothing → Docker Hub."""
    if not server:
        return docker_hub.DOMAIN
    host = urlsplit(server).netloc if "://" in server else server.split("/", 1)[0]
    return docker_hub.DOMAIN if host in docker_hub.ALIASES else host


async def login(
    pool: RegistryPool, config: DockerConfig, server: str | None, credentials: AuthConfig
) -> LoginOutcome:
    domain = login_domain(server)
    client = await pool.connect(domain, credentials)
    result = await client.run(login_flow(credentials, protocol.ping_url(client.base)))
    if result.identity_token:
        # As Docker: keep the refresh token the registry gave, not the password.
        credentials = AuthConfig(
            username=credentials.username, identity_token=result.identity_token
        )
    unencrypted = await config.store(domain, credentials)
    pool.use_credentials(domain, credentials)
    return LoginOutcome(domain=domain, status=result.status, stored_unencrypted=unencrypted)


async def logout(config: DockerConfig, server: str | None) -> str:
    domain = login_domain(server)
    await config.erase(domain)
    return domain
