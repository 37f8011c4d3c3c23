"""The benchmarks' child processes: what they run in, and running one while measuring it.

Every contender and helper runs as a child with the same clean environment (``child_env``) and,
per cold run, a registry of its own (``fresh_registry``) and an empty skopeo blob-info cache
(``cold_env``). The peak RSS is the child's ``ru_maxrss`` (KiB on Linux), as GNU time reads it
with ``wait4`` (see ``run_measured``): the kernel's high-water mark, not a sample. The wall time
spans spawn to reap, so a contender's start-up (an interpreter's imports, a binary's load)
counts, as it does for a user.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from tests.support.registry import LocalRegistry, start_registry

KIB = 1024
REPO_ROOT = Path(__file__).resolve().parent.parent
CLI = REPO_ROOT / "cli.py"
T = TypeVar("T")
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class BenchmarkError(RuntimeError):
    """A contender failed, timed out or pushed something wrong: the numbers would be meaningless."""


@dataclass(frozen=True)
class Measured:
    """One finished child process."""

    argv: list[str]
    seconds: float
    peak_rss_kib: int
    exit_code: int
    timed_out: bool
    stdout: str
    stderr: str
    #: User + system CPU time of the child and of every descendant it waited for (``wait4``).
    cpu_seconds: float = 0.0

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / KIB

    def describe_failure(self) -> str:
        why = "timed out" if self.timed_out else f"exited {self.exit_code}"
        return (
            f"{' '.join(self.argv)}\n{why} after {self.seconds:.1f} s\n"
            f"--- stderr ---\n{self.stderr.strip()}\n--- stdout (tail) ---\n{self.stdout[-2000:]}"
        )


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds a running process (a registry, a daemon) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: GNU time: the small process that starts each measured child and reads its rusage.
GNU_TIME = Path("/usr/bin/time")
#: What GNU time writes: the child's peak RSS (KiB), user and system CPU seconds.
_TIME_FORMAT = "%M %U %S"


def run_measured(
    argv: Sequence[str],
    *,
    timeout: float,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Measured:
    """Run ``argv`` to its end (killed after ``timeout`` s); its output goes through ``log_dir``.

    Output goes to files rather than pipes so that a chatty child never blocks on a full pipe
    and the parent does no work while it runs.

    The child is started by GNU time, which reads its rusage. Linux keeps a process's peak RSS
    across ``execve``, so a child forked straight from this harness (tens of MiB, after its
    imports) would report at least the harness's own peak as its ``ru_maxrss``; GNU time is a
    process of about 2 MiB. Without GNU time the child's rusage comes from ``wait4`` here, and
    the peak RSS reported is at least the harness's.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / "stdout", log_dir / "stderr"
    rusage_path = log_dir / "rusage"
    command = list(argv)
    if GNU_TIME.exists():
        command = [str(GNU_TIME), "-f", _TIME_FORMAT, "-o", str(rusage_path), "--", *argv]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own process group: a timeout kills the measured command with its starter.
            start_new_session=True,
        )
        status, rusage, timed_out = _reap(child, timeout)
        seconds = time.perf_counter() - started
    peak_kib, cpu = _child_usage(rusage_path, rusage)
    return Measured(
        argv=list(argv),
        seconds=seconds,
        peak_rss_kib=peak_kib,
        exit_code=os.waitstatus_to_exitcode(status),
        timed_out=timed_out,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        cpu_seconds=cpu,
    )


def _child_usage(rusage_path: Path, rusage: resource.struct_rusage) -> tuple[int, float]:
    """The measured child's peak RSS (KiB) and CPU seconds: GNU time's figures where it wrote
    them (its last line: a killed child's has a note before it), else ``wait4``'s."""
    try:
        peak, user, system = rusage_path.read_text().split()[-3:]
        return int(peak), float(user) + float(system)
    except (OSError, ValueError):
        return rusage.ru_maxrss, rusage.ru_utime + rusage.ru_stime


def _reap(
    child: subprocess.Popen[bytes], timeout: float
) -> tuple[int, resource.struct_rusage, bool]:
    """Wait for ``child`` with ``wait4``; kill its process group on timeout, and on Ctrl-C
    before re-raising."""
    fired = threading.Event()

    def kill_on_timeout() -> None:
        fired.set()
        _kill_group(child)

    timer = threading.Timer(timeout, kill_on_timeout)
    timer.start()
    try:
        _, status, rusage = os.wait4(child.pid, 0)
    except BaseException:
        _kill_group(child)
        os.wait4(child.pid, 0)
        child.returncode = -9
        raise
    finally:
        timer.cancel()
    # Popen did not reap the child itself; tell it, so that it never waits on a recycled pid.
    child.returncode = os.waitstatus_to_exitcode(status)
    return status, rusage, fired.is_set()


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    # The child leads its own group (start_new_session), so the group id is its pid.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def run_checked(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> str:
    """Run an untimed helper command; its stdout, or a BenchmarkError with its stderr."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"{' '.join(argv)}\ntimed out after {timeout} s") from exc
    if done.returncode != 0:
        raise BenchmarkError(
            f"{' '.join(argv)}\nexited {done.returncode}\n--- stderr ---\n{done.stderr.strip()}"
        )
    return done.stdout


# --- what a child runs in ---------------------------------------------------------------------


def child_env(base: Path) -> dict[str, str]:
    """The environment of every child: no proxies, and an empty Docker config (no credentials)."""
    docker_config = base / "docker-config"
    docker_config.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in _PROXY_VARIABLES and not k.startswith("HOIST_")
    }
    env["DOCKER_CONFIG"] = str(docker_config)
    # Where ``python -m cli`` (``hoist_argv``) finds Hoist, whatever the working directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def cold_env(env: Mapping[str, str], run_dir: Path) -> dict[str, str]:
    """``env`` with skopeo's blob-info cache moved into ``run_dir``, so each run starts without it.

    skopeo remembers which compressed digest it made of which layer and where it pushed it
    (``blob-info-cache-v1.boltdb``), and mounts from there next time. For root that cache is the
    machine-wide ``/var/lib/containers/cache``; containers/image reads the cache's place from the
    user's data directory when it takes itself for rootless, which ``_CONTAINERS_ROOTLESS_UID``
    tells it. Runs stay cold without touching the machine's own cache, and the commands of one
    run (a loop) still share a cache, as a CI job's would.
    """
    return {
        **env,
        "_CONTAINERS_ROOTLESS_UID": "1000",
        "XDG_DATA_HOME": str(run_dir / "xdg-data"),
        "XDG_RUNTIME_DIR": str(run_dir),
    }


def byte_compile_hoist() -> None:
    """Byte-compile Hoist's own modules once, untimed, as ``pip install`` does for a package.

    Hoist runs from this checkout, whose modules an editable install leaves as sources. Where
    nothing writes ``__pycache__`` (``PYTHONDONTWRITEBYTECODE``, set on these machines), every
    ``hoist`` command would otherwise compile them all again at start-up: a cost of running from
    a source tree, not of Hoist. ``hoist_argv`` runs the ``cli`` module as the ``hoist`` command
    does, so that it too is read compiled (a script never is). A checkout that cannot take the
    compiled files is timed as it is, and the benchmark says so.
    """
    if not compileall.compile_dir(REPO_ROOT / "engine", quiet=1) or not compileall.compile_file(
        CLI, quiet=1
    ):
        print(
            f"warning: could not byte-compile Hoist in {REPO_ROOT}: every hoist command "
            "compiles its modules at start-up, and its times include that",
            file=sys.stderr,
            flush=True,
        )


#: ``hoist``, as its console script runs it: the ``cli`` module (``child_env`` finds it).
HOIST_COMMAND = [sys.executable, "-m", "cli"]


def hoist_argv(root: Path, *args: str) -> list[str]:
    return [*HOIST_COMMAND, "--root", str(root), *args]


def skopeo_copy_argv(source: str, target: str) -> list[str]:
    return ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", source, f"docker://{target}"]


def read_manifest(target: str, *, timeout: float, env: Mapping[str, str]) -> dict[str, Any]:
    """The manifest the registry holds for ``target``, as skopeo (another client) reads it."""
    raw = run_checked(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{target}"],
        timeout=timeout,
        env=env,
    )
    manifest: dict[str, Any] = json.loads(raw)
    return manifest


def check_pushed(
    target: str, image_id: str, layer_count: int, *, timeout: float, env: Mapping[str, str]
) -> None:
    """Read the manifest back with skopeo: the right config and every layer, or abort."""
    manifest = read_manifest(target, timeout=timeout, env=env)
    config = manifest.get("config", {}).get("digest")
    layers = manifest.get("layers", [])
    if config != image_id or len(layers) != layer_count:
        raise BenchmarkError(
            f"{target}: expected config {image_id} and {layer_count} layers, "
            f"the registry holds config {config} and {len(layers)} layers"
        )


# --- one cold run's registry ------------------------------------------------------------------


#: Where runs' registries keep their blobs unless told otherwise: RAM, when the machine has it.
RAM_DIR = Path("/dev/shm")

REGISTRY_DIR_HELP = (
    "where each run's registry keeps its blobs (default: /dev/shm when there is one, else "
    "--work-dir). CNCF Distribution fsyncs every file it writes, about four per request: on a "
    "disk that cost is the registry's, the same for every contender, and noisy"
)


def add_run_options(parser: argparse.ArgumentParser, *, timeout: float) -> None:
    """``--timeout``, ``--work-dir`` and ``--registry-dir``, which every benchmark takes; call
    ``registry_dir_or_default`` on the parsed arguments."""
    parser.add_argument(
        "--timeout",
        type=float,
        default=timeout,
        help=f"seconds allowed to each command (default {timeout:.0f})",
    )
    parser.add_argument("--work-dir", type=Path, help="where temporary files go (default: $TMPDIR)")
    parser.add_argument("--registry-dir", type=Path, help=REGISTRY_DIR_HELP)


def registry_storage(registry_dir: Path | None) -> str:
    """Where the registries kept their blobs, for the report."""
    return str(registry_dir) if registry_dir is not None else "each run's directory"


def default_registry_dir() -> Path | None:
    """A RAM filesystem for the registries' storage, or None (then they live in the run dir)."""
    if RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK):
        return RAM_DIR
    return None


@contextlib.contextmanager
def fresh_registry(
    base: Path, registry_dir: Path | None = None, *, access_log: bool = False
) -> Iterator[tuple[Path, LocalRegistry]]:
    """A run directory under ``base`` and a registry with empty storage (under ``registry_dir``
    if given, else inside the run directory); both gone afterwards. With ``access_log`` the
    registry logs every request (``registry.log()``)."""
    with contextlib.ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="run-", dir=base)))
        registry_home = run_dir
        if registry_dir is not None:
            registry_home = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="hoist-reg-", dir=registry_dir)
                )
            )
        registry = start_registry(registry_home / "registry", access_log=access_log)
        try:
            yield run_dir, registry
        finally:
            registry.stop()


@dataclass(frozen=True)
class StoredBlobs:
    """What a registry keeps in its blob store: every distinct blob once, manifests included."""

    count: int
    bytes: int


def settle() -> None:
    """Flush every dirty page to disk before a timed run, untimed.

    Otherwise a run pays for the writeback of whatever came before it (an earlier contender's
    registry uploads, its own untimed preparation), and always the same contender follows the
    heaviest writer.
    """
    os.sync()


def in_turn(contenders: Sequence[T], round_: int) -> list[T]:
    """Round r's order: the contenders rotated by r - 1, so each runs first and after each other
    one as often as the rounds allow, and none always follows the same neighbour."""
    shift = (round_ - 1) % len(contenders)
    return [*contenders[shift:], *contenders[:shift]]


def stored_blobs(registry: LocalRegistry) -> StoredBlobs:
    """Count and size the ``data`` files of the registry's filesystem blob store."""
    root = registry.storage / "docker" / "registry" / "v2" / "blobs"
    sizes = [path.stat().st_size for path in root.rglob("data") if path.is_file()]
    return StoredBlobs(len(sizes), sum(sizes))


def check_exit(measured: Measured, registry: LocalRegistry) -> None:
    """Abort the benchmark, with the registry's log, unless ``measured`` exited 0 in time."""
    if measured.exit_code != 0 or measured.timed_out:
        log = registry.log().strip()
        raise BenchmarkError(
            measured.describe_failure() + (f"\n--- registry ---\n{log}" if log else "")
        )


def interrupt_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so registries stop and temporary files go."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
