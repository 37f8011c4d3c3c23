"""Where ``hoist serve`` listens and ``hoist push`` finds it: ``unix:///PATH`` or
``tcp://HOST:PORT``, and the default socket in the store's root.

A leaf: the push's client of the daemon reads addresses before it imports anything else.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import UsageError
from engine.value import Value

#: The socket ``hoist serve`` listens on by default, in its store's root (one daemon per store).
SOCKET_NAME = "hoist.sock"

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Address(Value):
    """A unix socket path, or a TCP host and port."""

    __slots__ = ("host", "path", "port")
    path: str | None
    host: str
    port: int

    def __init__(self, path: str | None = None, host: str = "", port: int = 0) -> None:
        super().__init__(path, host, port)

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.path is not None else f"tcp://{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        return self.path is not None or self.host in _LOOPBACK or self.host.startswith("127.")


def default_socket(root: Path) -> Path:
    return root / SOCKET_NAME


def parse_address(text: str) -> Address:
    """``unix:///PATH`` or ``tcp://HOST:PORT``; anything else is a usage error."""
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path:
            raise UsageError(f"invalid address {text!r}: unix:// needs a path")
        return Address(path=path)
    if not text.startswith("tcp://"):
        raise UsageError(f"invalid address {text!r}: use unix:///PATH or tcp://127.0.0.1:PORT")
    host, _, port = text[len("tcp://") :].rstrip("/").rpartition(":")
    if not port.isdigit() or not host:
        raise UsageError(f"invalid address {text!r}: tcp:// needs HOST:PORT")
    return Address(host=host.strip("[]"), port=int(port))


def listening_address(text: str, *, tls_verify: bool = False) -> Address:
    """Where ``hoist serve`` listens. A TCP host that is not loopback is refused unless clients
    must show a certificate of the configured CA (``--tlsverify``, as dockerd asks of a network
    socket): the API pushes with the credentials it is sent."""
    address = parse_address(text)
    if not tls_verify and not address.loopback:
        raise UsageError(
            f"refusing to listen on {address.host} without --tlsverify: a network address is "
            "served only to clients with a certificate of the --tlscacert CA"
        )
    return address
