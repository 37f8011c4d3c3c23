"""Run CNCF Distribution (Debian's ``docker-registry``) on a free loopback port.

Used by the test fixtures, the benchmarks and the demo, so all three push to the real thing.
Besides the plain anonymous http registry, it runs the variants users meet: htpasswd Basic auth,
token auth (see ``tokenserver``), and TLS with or without client certificates (see ``tls``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Only the TLS variants need ``cryptography``: the plain registry (demo, benchmarks) does not.
    from engine.testing.tls import CertKeyPair

BINARY = "docker-registry"

#: What ``/v2/`` answers once the registry serves: 200 when open, 401 when it wants credentials.
_READY_STATUSES = (200, 401)


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


def _config(
    storage: Path,
    port: int,
    *,
    access_log: bool,
    auth: HtpasswdAuth | TokenAuth | None,
    tls: RegistryTls | None,
) -> dict[str, Any]:
    http: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": "hoist-local-test-secret"}
    if tls is not None:
        http["tls"] = tls.config()
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {
            "level": "info" if access_log else "error",
            "accesslog": {"disabled": not access_log},
        },
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "cache": {"blobdescriptor": "inmemory"},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
    }
    if auth is not None:
        config["auth"] = auth.config()
    return config


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRegistry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``; ``storage`` its filesystem root."""

    port: int
    storage: Path
    process: subprocess.Popen[bytes]
    workdir: Path
    tls: RegistryTls | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def ca_path(self) -> Path | None:
        """The CA that signed the registry's certificate; None over plain http."""
        return self.tls.ca if self.tls is not None else None

    def ssl_context(self, *, client: bool = True) -> ssl.SSLContext | None:
        """A context that trusts the registry's CA and, if ``client`` and the registry wants
        one, presents the client pair; None over plain http."""
        if self.tls is None:
            return None
        from engine.testing.tls import client_context

        return client_context(self.tls.ca, self.tls.client if client else None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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
    if shutil.which(BINARY) is None:
        raise RuntimeError(f"{BINARY} not found: install the Debian package docker-registry")
    if htpasswd is not None and token is not None:
        raise ValueError("a registry has one auth method: htpasswd or token, not both")
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yml"
    settings = _config(storage, port, access_log=access_log, auth=htpasswd or token, tls=tls)
    # JSON is YAML too, and it quotes every path safely.
    config.write_text(json.dumps(settings, indent=2))
    log = (workdir / "registry.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    process = subprocess.Popen(
        [BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    log.close()
    registry = LocalRegistry(port=port, storage=storage, process=process, workdir=workdir, tls=tls)
    _wait_ready(registry)
    return registry


def _ping_status(registry: LocalRegistry) -> int:
    # No proxy: a proxy from the environment must never stand between a test and loopback.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=registry.ssl_context())
    )
    try:
        with opener.open(f"{registry.url}/v2/", timeout=1) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def _wait_ready(registry: LocalRegistry, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(f"registry exited at start:\n{registry.log()}")
        try:
            status = _ping_status(registry)
            if status in _READY_STATUSES:
                return
            last = f"/v2/ answered {status}"
        # Refused connections and TLS errors (URLError and ssl.SSLError are OSErrors too) mean
        # "not yet"; the last one is reported if it never answers.
        except OSError as error:
            last = repr(error)
        time.sleep(0.05)
    registry.stop()
    raise RuntimeError(f"registry did not answer within {timeout} s ({last}):\n{registry.log()}")


@contextlib.contextmanager
def running_registry(
    workdir: Path | None = None,
    *,
    access_log: bool = False,
    htpasswd: HtpasswdAuth | None = None,
    token: TokenAuth | None = None,
    tls: RegistryTls | None = None,
) -> Iterator[LocalRegistry]:
    """A registry for the duration of a ``with`` block, its files removed afterwards."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hoist-registry-"))
            workdir = Path(tmp)
        registry = start_registry(
            workdir, access_log=access_log, htpasswd=htpasswd, token=token, tls=tls
        )
        stack.callback(registry.stop)
        yield registry
