"""Which URLs a push may use for a registry, and which registries are insecure. No I/O.

As Docker: ``https`` first; ``http`` only for an insecure registry (loopback by default, plus
``--insecure-registry`` hosts and CIDRs); mirrors never. Docker Hub is pushed to at
``registry-1.docker.io``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from engine import docker_hub

DEFAULT_INSECURE_CIDRS = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str  # host[:port] as it goes in a URL
    verify_tls: bool = True

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"


def split_host_port(host: str) -> tuple[str, str | None]:
    """``[::1]:5000`` → (``::1``, ``5000``); ``localhost`` → (``localhost``, None)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, None


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_insecure(
    host: str, insecure_registries: Iterable[str] = (), *, loopback: bool = True
) -> bool:
    """Whether ``host`` may be reached over plain http or unverified TLS.

    ``loopback=False`` takes loopback out of the defaults (Docker always has it in): for a local
    TLS registry whose certificate should really be checked.
    """
    name, _ = split_host_port(host)
    if name == "localhost" and loopback:
        return True
    address = _ip(name)
    cidrs = list(DEFAULT_INSECURE_CIDRS) if loopback else []
    for entry in insecure_registries:
        if "/" in entry:
            cidrs.append(entry)
        elif entry in (host, name):
            return True
    if address is None:
        return False
    return any(address in ipaddress.ip_network(c, strict=False) for c in cidrs)


def push_host(domain: str) -> str:
    return docker_hub.PUSH_HOST if domain == docker_hub.DOMAIN else domain


def push_endpoints(
    domain: str, insecure_registries: Iterable[str] = (), *, loopback_insecure: bool = True
) -> list[Endpoint]:
    host = push_host(domain)
    if not is_insecure(domain, insecure_registries, loopback=loopback_insecure):
        return [Endpoint("https", host)]
    return [Endpoint("https", host, verify_tls=False), Endpoint("http", host)]
