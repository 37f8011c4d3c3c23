"""TLS for a registry host, configured as Docker configures it: ``certs.d/HOST[:PORT]/``.

In that directory ``*.crt`` files are extra CAs, and each ``NAME.cert`` goes with ``NAME.key`` as a
client certificate. Directories are looked up in ``$HOIST_CERTS_D`` (a ``:``-separated list), then
``/etc/docker/certs.d``. Verification against the system's trust store is always on, except for
an insecure registry, which Docker lets use https without verification.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import TLSConfigError

CERTS_D_ENV = "HOIST_CERTS_D"
DOCKER_CERTS_D = Path("/etc/docker/certs.d")


@dataclass(frozen=True)
class HostTLS:
    """What certs.d holds for one host."""

    directory: Path | None
    cas: tuple[Path, ...] = ()
    client_pairs: tuple[tuple[Path, Path], ...] = ()


def certs_dirs(environ: dict[str, str] | None = None) -> list[Path]:
    env = os.environ if environ is None else environ
    listed = [Path(p) for p in env.get(CERTS_D_ENV, "").split(os.pathsep) if p]
    return [*listed, DOCKER_CERTS_D]


def find_host_tls(host: str, roots: Sequence[Path]) -> HostTLS:
    """The first ``ROOT/HOST`` directory that exists, and what it holds. Blocking: off the loop."""
    for root in roots:
        directory = root / host  # Docker names it after host[:port], the colon kept
        if directory.is_dir():
            return _read_directory(directory)
    return HostTLS(directory=None)


def _read_directory(directory: Path) -> HostTLS:
    files = sorted(p for p in directory.iterdir() if p.is_file())
    cas = tuple(p for p in files if p.suffix == ".crt")
    pairs = []
    for cert in (p for p in files if p.suffix == ".cert"):
        key = cert.with_suffix(".key")
        if not key.exists():
            raise TLSConfigError(f"missing key {key.name} for client certificate {cert}")
        pairs.append((cert, key))
    for key in (p for p in files if p.suffix == ".key"):
        if not key.with_suffix(".cert").exists():
            raise TLSConfigError(f"missing client certificate {key.stem}.cert for key {key}")
    return HostTLS(directory=directory, cas=cas, client_pairs=tuple(pairs))


def ssl_context(host_tls: HostTLS, *, verify: bool) -> ssl.SSLContext:
    """A client context: system CAs plus the host's, its client pair, verification as asked."""
    if verify:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        # Nothing will be checked against the system's CAs: parsing them (tens of ms) is waste.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        for ca in host_tls.cas:
            context.load_verify_locations(cafile=str(ca))
        for cert, key in host_tls.client_pairs:
            context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"{host_tls.directory}: {exc}") from exc
    return context


@functools.cache
def system_trust() -> ssl.SSLContext:
    """A verifying context with the system's CAs, for https URLs of a registry reached over
    http (a token service, say): made once, on first need, as loading the CAs takes ~15 ms.

    Every https request gets a context of Hoist's own, never aiohttp's default one, so that the
    command line can skip building that one at start-up (see ``cli.py``).
    """
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
