"""Registry variants for the tests: htpasswd Basic auth, token auth, TLS with or without client
certificates, on top of the plain loopback registry that the demo starts (``engine.demo.registry``).

``SecuredRegistry`` is a running variant together with what a client needs to get in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.demo.registry import (
    LocalRegistry,
    free_port,
    registry_config,
    running_registry,
    spawn,
    storage_dir,
    wait_ready,
)

if TYPE_CHECKING:
    import ssl

    # The CA and the token server need ``cryptography``; a plain registry (benchmarks) must not.
    from tests.support.tls import CertKeyPair
    from tests.support.tokenserver import TokenServer

__all__ = [
    "HtpasswdAuth",
    "LocalRegistry",
    "RegistryTls",
    "RegistryVariant",
    "SecuredRegistry",
    "TokenAuth",
    "free_port",
    "running_registry",
    "start_registry",
]


@dataclass(frozen=True)
class HtpasswdAuth:
    """``auth: htpasswd``: Basic auth against a bcrypt htpasswd file (see ``htpasswd``)."""

    path: Path
    realm: str = "hoist-test-registry"

    def config(self) -> dict[str, Any]:
        return {"htpasswd": {"realm": self.realm, "path": str(self.path)}}


@dataclass(frozen=True)
class TokenAuth:
    """``auth: token``: clients fetch bearer tokens from ``realm``; the registry checks that they
    are signed by a certificate that chains to ``rootcertbundle`` and name ``issuer`` and
    ``service``."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path

    def config(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.rootcertbundle),
            }
        }


@dataclass(frozen=True)
class RegistryTls:
    """``http: tls``: serve https with ``server``, a pair that ``ca`` signed.

    With ``client_cas``, the registry requires a client certificate signed by one of them;
    ``client`` is then a pair it accepts, which the readiness check presents.
    """

    server: CertKeyPair
    ca: Path
    client_cas: tuple[Path, ...] = ()
    client: CertKeyPair | None = None

    def __post_init__(self) -> None:
        if self.client_cas and self.client is None:
            raise ValueError("a registry that requires client certificates needs a client pair")

    def config(self) -> dict[str, Any]:
        tls: dict[str, Any] = {
            "certificate": str(self.server.certificate),
            "key": str(self.server.key),
        }
        if self.client_cas:
            tls["clientcas"] = [str(path) for path in self.client_cas]
        return tls


@dataclass
class RegistryVariant(LocalRegistry):
    """A running registry started here: https when ``tls`` is set, http otherwise."""

    tls: RegistryTls | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def ca_path(self) -> Path | None:
        """The CA that signed the registry's certificate; None over plain http."""
        return self.tls.ca if self.tls is not None else None

    def ssl_context(self, *, client: bool = True) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        from tests.support.tls import client_context

        return client_context(self.tls.ca, self.tls.client if client else None)


def start_registry(
    workdir: Path,
    *,
    access_log: bool = False,
    htpasswd: HtpasswdAuth | None = None,
    token: TokenAuth | None = None,
    tls: RegistryTls | None = None,
) -> LocalRegistry:
    """Start a registry with its config and storage under ``workdir``; wait until it answers.

    Without options it is anonymous plain http; ``htpasswd`` or ``token`` (not both) adds auth,
    ``tls`` makes it https.
    """
    if htpasswd is not None and token is not None:
        raise ValueError("a registry has one auth method: htpasswd or token, not both")
    port = free_port()
    storage = storage_dir(workdir)
    config = registry_config(storage, port, access_log=access_log)
    auth = htpasswd or token
    if auth is not None:
        config["auth"] = auth.config()
    if tls is not None:
        config["http"]["tls"] = tls.config()
    process = spawn(workdir, config)
    registry = RegistryVariant(
        port=port, storage=storage, process=process, workdir=workdir, tls=tls
    )
    wait_ready(registry)
    return registry


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
