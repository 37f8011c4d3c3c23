"""``hoist serve``: Hoist's Docker Engine API on a unix socket, started as a user starts it, for
tests and benchmarks that drive it with the ``docker`` CLI beside a real dockerd
(``tests/support/dockerd.py``, whose ``Daemon`` it yields too).

``hoist_serve_unavailable()`` says why it cannot run (a checkout without the command);
``running_hoist_serve`` starts it, waits until ``GET /_ping`` answers, and stops it. Everything
here blocks.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from engine.serve import remote
from engine.serve.address import Address
from tests.support.clients import ROOT
from tests.support.dockerd import Daemon, stop_process

__all__ = ["SERVE_MISSING", "hoist_serve_unavailable", "running_hoist_serve"]

#: The skip reason where this checkout's CLI has no ``serve`` command.
SERVE_MISSING = "hoist serve is not available in this checkout"
START_TIMEOUT = 30.0
CLI = ROOT / "cli.py"


def hoist_serve_unavailable(command: Sequence[str] | None = None) -> str | None:
    """``SERVE_MISSING`` when ``HOIST serve --help`` fails, else None."""
    argv = [*(command or [sys.executable, str(CLI)]), "serve", "--help"]
    try:
        answer = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return f"{SERVE_MISSING}: `{' '.join(argv)}` did not answer within 60 s"
    return SERVE_MISSING if answer.returncode != 0 else None


def ping(path: Path, timeout: float = 2.0) -> bool:
    """Whether the daemon on ``path`` answers ``GET /_ping`` with 200."""
    return remote.ping(Address(path=str(path)), timeout)


@contextlib.contextmanager
def running_hoist_serve(
    tmp: Path,
    root: Path,
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Daemon]:
    """``HOIST --root ROOT serve --host unix://SOCKET``, answering, stopped afterwards.

    ``command`` is how to run Hoist (default: this checkout's ``cli.py``; the benchmarks pass
    ``python -m cli``); ``env`` the server's environment (default: this process's).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    config_dir = tmp / "docker-config"
    config_dir.mkdir(exist_ok=True)
    log_path = tmp / "hoist-serve.log"
    # A short directory for the socket: unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="hoist-serve-", dir="/tmp") as short:
        sock = Path(short) / "hoist.sock"
        argv = [
            *(command or [sys.executable, str(CLI)]),
            "--root",
            str(root),
            "serve",
            "--host",
            f"unix://{sock}",
        ]
        server_env = {**(os.environ if env is None else env), "DOCKER_CONFIG": str(config_dir)}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server_env
            )
        daemon = Daemon(sock, config_dir, log_path, process)
        try:
            _wait_ready(daemon)
            yield daemon
        finally:
            stop_process(process)


def _wait_ready(daemon: Daemon) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(
                f"hoist serve exited {daemon.process.returncode} while starting:\n{daemon.log()}"
            )
        if daemon.socket.exists() and ping(daemon.socket):
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"hoist serve did not answer GET /_ping within {START_TIMEOUT:.0f} s:\n{daemon.log()}"
    )
