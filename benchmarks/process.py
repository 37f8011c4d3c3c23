"""Run one command as a child process and measure it: wall time and peak resident memory.

The peak RSS comes from ``os.wait4`` (``ru_maxrss``, KiB on Linux), so it is the child's own
high-water mark, read by the kernel, not sampled. The wall time spans spawn to reap, so a
contender's start-up (an interpreter's imports, a binary's load) counts, as it does for a user.
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KIB = 1024


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

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / KIB

    def describe_failure(self) -> str:
        why = "timed out" if self.timed_out else f"exited {self.exit_code}"
        return (
            f"{' '.join(self.argv)}\n{why} after {self.seconds:.1f} s\n"
            f"--- stderr ---\n{self.stderr.strip()}\n--- stdout (tail) ---\n{self.stdout[-2000:]}"
        )


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
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / "stdout", log_dir / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(
            list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
        status, rusage, timed_out = _reap(child, timeout)
        seconds = time.perf_counter() - started
    return Measured(
        argv=list(argv),
        seconds=seconds,
        peak_rss_kib=rusage.ru_maxrss,
        exit_code=os.waitstatus_to_exitcode(status),
        timed_out=timed_out,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def _reap(
    child: subprocess.Popen[bytes], timeout: float
) -> tuple[int, resource.struct_rusage, bool]:
    """Wait for ``child`` with ``wait4``; kill it on timeout, and on Ctrl-C before re-raising."""
    fired = threading.Event()

    def kill_on_timeout() -> None:
        fired.set()
        child.kill()

    timer = threading.Timer(timeout, kill_on_timeout)
    timer.start()
    try:
        _, status, rusage = os.wait4(child.pid, 0)
    except BaseException:
        child.kill()
        os.wait4(child.pid, 0)
        child.returncode = -9
        raise
    finally:
        timer.cancel()
    # Popen did not reap the child itself; tell it, so that it never waits on a recycled pid.
    child.returncode = os.waitstatus_to_exitcode(status)
    return status, rusage, fired.is_set()


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
