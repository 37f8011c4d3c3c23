"""Registries that want something from their clients: credentials, trust in a CA, a certificate.

Each fixture starts a real ``docker-registry`` on a free loopback port (and, for token auth, a
token server in a thread), yields a ``SecuredRegistry`` and stops everything at teardown:

- ``basic_auth_registry``: http, htpasswd Basic auth (bcrypt file made here);
- ``tls_registry``: https with a server certificate from a CA made here;
- ``mtls_registry``: https that also requires a client certificate from that CA;
- ``token_registry``: http, bearer tokens from ``token_server`` (its request log is there).

Passwords are random per test, so a test can search any output for them.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.htpasswd import write_htpasswd
from tests.support.registry import (
    HtpasswdAuth,
    LocalRegistry,
    RegistryTls,
    start_registry,
)
from tests.support.tls import CertificateAuthority, CertKeyPair, write_certs_d
from tests.support.tokenserver import TokenServer, start_token_server

USERNAME = "hoist-tester"


@dataclass(frozen=True)
class SecuredRegistry:
    """A running registry variant and what a client needs to get in."""

    registry: LocalRegistry
    username: str = ""
    password: str = ""
    #: The CA that signed the registry's certificate (https variants).
    ca: Path | None = None
    #: A client pair the registry accepts (mTLS variant).
    client: CertKeyPair | None = None
    #: A ``certs.d`` root holding ``HOST:PORT/`` with ``ca.crt`` (and ``client.cert``/``.key``).
    certs_d: Path | None = None
    token_server: TokenServer | None = None

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def url(self) -> str:
        return self.registry.url

    @property
    def creds(self) -> str:
        """``USER:PASSWORD``, as ``skopeo --creds`` takes them."""
        return f"{self.username}:{self.password}"

    @property
    def cert_dir(self) -> Path | None:
        """This registry's own ``certs.d/HOST:PORT`` directory."""
        return self.certs_d / self.host if self.certs_d is not None else None

    def ssl_context(self, *, client: bool = True) -> ssl.SSLContext | None:
        return self.registry.ssl_context(client=client)


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
