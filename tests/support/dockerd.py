"""A real Docker daemon to compare Hoist with: Debian's ``dockerd`` (package ``docker.io``),
private to one test or benchmark, with every path in a temporary directory.

It runs without networking or overlayfs (``vfs`` storage, no bridge, no iptables), which is all a
``docker load`` / ``docker push`` needs. Loopback registries need no setting: dockerd treats
127.0.0.0/8 as insecure (plain http) by default, as Hoist does. dockerd must run as root; where
it is missing or cannot start, ``DockerdUnavailable`` says why, for a skip reason.

``running_dockerd(tmp)`` starts one, yields a ``Daemon`` (its socket and a ``docker`` runner
with ``DOCKER_HOST`` and an empty private ``DOCKER_CONFIG``), and stops it, leaving no process
and no mount behind. ``Daemon`` serves ``hoist serve`` too (``tests/support/hoist_serve.py``), so
that one test drives both with the same client. Everything here blocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Daemon",
    "DockerdUnavailable",
    "dockerd_unavailable",
    "running_dockerd",
    "stop_process",
]

#: How long dockerd may take to answer ``docker version`` (it starts containerd first).
START_TIMEOUT = 60.0
#: How long it may take to shut down cleanly after SIGTERM before it is killed.
STOP_TIMEOUT = 30.0
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
#: Client settings from the caller's environment that would point ``docker`` elsewhere.
_CLIENT_VARIABLES = (
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_API_VERSION",
)


class DockerdUnavailable(RuntimeError):
    """dockerd is missing or could not start here; the message says why (a skip reason)."""


@dataclass(frozen=True)
class Daemon:
    """A running process serving the Docker Engine API on a unix socket (a private dockerd, or
    ``hoist serve``), and the ``docker`` client pointed at it."""

    socket: Path
    #: An empty Docker client config directory: no credentials, no contexts of the machine's.
    config_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        """``DOCKER_HOST`` for this daemon."""
        return f"unix://{self.socket}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) set up for a ``docker`` client of this
        daemon."""
        env = {
            k: v
            for k, v in (os.environ if base is None else base).items()
            if k not in _CLIENT_VARIABLES
        }
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.config_dir)
        return env

    def docker(
        self, *args: str, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this daemon; with ``check``, fail with its stderr."""
        result = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def dockerd_unavailable() -> str | None:
    """Why no private dockerd can run here, or None when it may (it can still fail to start)."""
    if shutil.which("dockerd") is None:
        return "dockerd is not installed: apt-get install docker.io (.ci/install does this)"
    if shutil.which("docker") is None:
        return "the docker CLI is not on PATH"
    if os.geteuid() != 0:
        return f"dockerd must run as root, and this process runs as uid {os.geteuid()}"
    return None


def daemon_config(data_root: Path, exec_root: Path, pidfile: Path) -> dict[str, object]:
    """Issue 14's daemon.json: no networking (bridge, iptables), ``vfs`` instead of overlayfs."""
    return {
        "storage-driver": "vfs",
        "iptables": False,
        "ip6tables": False,
        "bridge": "none",
        "data-root": str(data_root),
        "exec-root": str(exec_root),
        "pidfile": str(pidfile),
    }


@contextlib.contextmanager
def running_dockerd(tmp: Path) -> Iterator[Daemon]:
    """A dockerd with its data under ``tmp``, answering on a socket, stopped afterwards.

    Raises ``DockerdUnavailable`` (with the daemon's log) when it is missing or never answers.
    """
    reason = dockerd_unavailable()
    if reason is not None:
        raise DockerdUnavailable(reason)
    tmp.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to 107 bytes, and containerd puts its own sockets under the
    # exec root: those live in a short directory of their own, not in a test's deep tmp_path.
    with tempfile.TemporaryDirectory(prefix="hoist-dockerd-", dir="/tmp") as short:
        run_dir = Path(short)
        config_dir = tmp / "docker-config"
        config_dir.mkdir(exist_ok=True)
        config = daemon_config(tmp / "data-root", run_dir / "exec", run_dir / "dockerd.pid")
        config_path = tmp / "daemon.json"
        config_path.write_text(json.dumps(config, indent=2))
        socket = run_dir / "docker.sock"
        dockerd = Daemon(socket, config_dir, tmp / "dockerd.log", _spawn(config_path, socket, tmp))
        try:
            _wait_ready(dockerd)
            yield dockerd
        finally:
            _stop(dockerd, run_dir / "exec")
            _unmount_under(tmp, run_dir)


def _spawn(config_path: Path, socket: Path, tmp: Path) -> subprocess.Popen[bytes]:
    # No proxy from the environment may stand between the daemon and a loopback registry.
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    with (tmp / "dockerd.log").open("wb") as log:
        return subprocess.Popen(
            ["dockerd", "--config-file", str(config_path), "-H", f"unix://{socket}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own session: a Ctrl-C in the terminal reaches the test runner, which stops
            # the daemon in order, not the daemon directly.
            start_new_session=True,
        )


def _wait_ready(dockerd: Daemon) -> None:
    """Return once ``docker version`` gets the server's answer; raise with the log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if dockerd.process.poll() is not None:
            raise DockerdUnavailable(
                f"dockerd exited {dockerd.process.returncode} while starting:\n{_tail(dockerd)}"
            )
        answer = dockerd.docker("version", "--format", "{{.Server.Version}}", check=False)
        if answer.returncode == 0:
            return
        last = answer.stderr.strip()
        time.sleep(0.2)
    raise DockerdUnavailable(
        f"dockerd did not answer within {START_TIMEOUT:.0f} s ({last}):\n{_tail(dockerd)}"
    )


def _tail(dockerd: Daemon, lines: int = 30) -> str:
    return "\n".join(dockerd.log().splitlines()[-lines:])


def _stop(dockerd: Daemon, exec_root: Path) -> None:
    """SIGTERM (dockerd then stops its containerd and unmounts), SIGKILL if it hangs."""
    stop_process(dockerd.process)
    # containerd dies with dockerd (its parent-death signal), but it runs in a session of its
    # own: make sure, by its pidfile, that it is not left running after a kill.
    _kill_pidfile(exec_root / "containerd" / "containerd.pid")


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if ``process`` is still running after ``timeout`` s; reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _kill_pidfile(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if _is_containerd(pid):
            os.kill(pid, signal.SIGKILL)


def _is_containerd(pid: int) -> bool:
    # A stale pidfile may name a recycled pid: only a containerd is killed.
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "containerd"
    except OSError:
        return False


def _unmount_under(*roots: Path) -> None:
    """Lazily unmount what a killed dockerd left mounted (it bind-mounts its data root), deepest
    first, so that the temporary directories can go."""
    prefixes = tuple(f"{root.resolve()}" for root in roots)
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[4] for line in mountinfo if len(line.split()) > 4]
    ours = [p for p in points if any(p == r or p.startswith(f"{r}/") for r in prefixes)]
    for point in sorted(set(ours), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)
