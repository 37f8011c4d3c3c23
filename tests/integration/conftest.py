"""Fixtures that start real components for the integration tests.

Nothing here fakes the registry: integration tests push to ``docker-registry serve`` and read
back with ``skopeo``, an independent client. Both come from Debian packages that ``.ci/run``
installs; a machine without them fails loudly instead of skipping.

``registry`` is one anonymous registry for the session; ``hoist`` runs the CLI on a store of its
own. The registries that want something from their clients start per test (each on a free
loopback port, a token server in a thread for token auth) and stop at teardown:

- ``basic_auth_registry``: http, htpasswd Basic auth (bcrypt file made here);
- ``tls_registry``: https with a server certificate from a CA made here;
- ``mtls_registry``: https that also requires a client certificate from that CA;
- ``token_registry``: http, bearer tokens from ``token_server`` (its request log is there).

Passwords are random per test, so a test can search any output for them.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import Hoist, Skopeo
from tests.support.htpasswd import write_htpasswd
from tests.support.registry import (
    HtpasswdAuth,
    LocalRegistry,
    RegistryTls,
    SecuredRegistry,
    start_registry,
)
from tests.support.tls import CertificateAuthority, write_certs_d
from tests.support.tokenserver import TokenServer, start_token_server

USERNAME = "hoist-tester"


def _require(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: apt-get install {package} (.ci/run does this)")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """One registry for the session; tests keep apart by repository names."""
    _require("docker-registry", "docker-registry")
    running = start_registry(tmp_path_factory.mktemp("registry"))
    yield running
    running.stop()


@pytest.fixture
def hoist_root(tmp_path: Path) -> Path:
    return tmp_path / "hoist-root"


@pytest.fixture(scope="session")
def skopeo() -> Skopeo:
    _require("skopeo", "skopeo")
    return Skopeo()


@pytest.fixture
def hoist(hoist_root: Path, tmp_path: Path) -> Hoist:
    """The CLI with its own store and its own, empty, config.json directory."""
    return Hoist(hoist_root, env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})


def _password() -> str:
    return f"pw-{secrets.token_urlsafe(18)}"


@pytest.fixture
def registry_ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


@pytest.fixture
def basic_auth_registry(tmp_path: Path) -> Iterator[SecuredRegistry]:
    password = _password()
    htpasswd = write_htpasswd(tmp_path / "auth" / "htpasswd", {USERNAME: password})
    registry = start_registry(tmp_path / "basic-registry", htpasswd=HtpasswdAuth(htpasswd))
    yield SecuredRegistry(registry, USERNAME, password)
    registry.stop()


def _start_tls(
    tmp_path: Path, ca: CertificateAuthority, name: str, *, require_client: bool
) -> SecuredRegistry:
    client = ca.issue_client() if require_client else None
    tls = RegistryTls(
        server=ca.issue_server(),
        ca=ca.certificate,
        client_cas=(ca.certificate,) if require_client else (),
        client=client,
    )
    registry = start_registry(tmp_path / name, tls=tls)
    certs_d = tmp_path / "certs.d"
    write_certs_d(certs_d, registry.host, ca.certificate, client)
    return SecuredRegistry(registry, ca=ca.certificate, client=client, certs_d=certs_d)


@pytest.fixture
def tls_registry(tmp_path: Path, registry_ca: CertificateAuthority) -> Iterator[SecuredRegistry]:
    secured = _start_tls(tmp_path, registry_ca, "tls-registry", require_client=False)
    yield secured
    secured.registry.stop()


@pytest.fixture
def mtls_registry(tmp_path: Path, registry_ca: CertificateAuthority) -> Iterator[SecuredRegistry]:
    secured = _start_tls(tmp_path, registry_ca, "mtls-registry", require_client=True)
    yield secured
    secured.registry.stop()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    """A token server knowing one user (``USERNAME``, a random password) who may do anything."""
    server = start_token_server(
        {USERNAME: _password()}, ca=CertificateAuthority(tmp_path / "token-ca", "Hoist token CA")
    )
    yield server
    server.stop()


@pytest.fixture
def token_registry(tmp_path: Path, token_server: TokenServer) -> Iterator[SecuredRegistry]:
    registry = start_registry(tmp_path / "token-registry", token=token_server.registry_auth())
    password = token_server.users[USERNAME]
    yield SecuredRegistry(registry, USERNAME, password, token_server=token_server)
    registry.stop()
