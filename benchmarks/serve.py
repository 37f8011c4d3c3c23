"""Serve benchmark: the docker CLI pushing through ``hoist serve`` against through a real dockerd.

``python -m benchmarks.serve [--runs 5] [--layers 8] [--layer-mib 32] [--contenders dockerd,hoist]``
writes one uncompressed docker-archive of random layers and loads it once into each daemon. Each
round then, for each daemon in turn, starts a registry with empty storage and runs ``docker push``
twice to a repository no other run uses: **cold** (no blob in the registry) and **no-op** (the
same tag again: every blob present). See README.md.

The work is the daemon's, so a run's peak RSS is the daemon's (its ``VmHWM``, reset before the
run through ``/proc/PID/clear_refs``), not the docker client's.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.process import (
    HOIST_COMMAND,
    KIB,
    BenchmarkError,
    Measured,
    add_run_options,
    byte_compile_hoist,
    check_exit,
    check_pushed,
    child_env,
    default_registry_dir,
    fresh_registry,
    in_turn,
    registry_storage,
    run_checked,
    run_measured,
    settle,
)
from benchmarks.report import (
    MIB,
    Contender,
    Run,
    Summary,
    run_benchmark,
    say,
    summarise,
    table,
)
from tests.support.docker_output import EXISTS, PUSHED, parse_push
from tests.support.dockerd import Daemon, DockerdUnavailable, running_dockerd
from tests.support.hoist_serve import hoist_serve_unavailable, running_hoist_serve
from tests.support.registry import LocalRegistry
from tests.support.sample import LayerSpec, write_docker_archive

#: The name the docker-archive carries; both daemons load the image under it.
SOURCE_NAME = "bench/sample:latest"
TAG = "latest"
#: Issue 14's targets: hoist serve's median time over dockerd's, at most.
TARGETS = {"cold": 0.3, "noop": 1.5}
#: How Hoist runs: its ``cli`` module, byte-compiled, as the ``hoist`` console script does.


@dataclass(frozen=True)
class Side:
    """One daemon under test: its name on the command line and its two kinds of runs."""

    name: str
    cold: Contender
    noop: Contender


DOCKERD = Side(
    "dockerd",
    Contender("dockerd-cold", "1 docker push via dockerd, cold"),
    Contender("dockerd-noop", "3 docker push via dockerd, no-op"),
)
HOIST = Side(
    "hoist",
    Contender("hoist-cold", "2 docker push via hoist serve, cold", peer="dockerd-cold"),
    Contender("hoist-noop", "4 docker push via hoist serve, no-op", peer="dockerd-noop"),
)
SIDES = {side.name: side for side in (DOCKERD, HOIST)}


@dataclass(frozen=True)
class Workspace:
    """What is generated once, untimed, and shared by every run."""

    base: Path
    archive: Path
    image_id: str
    layer_count: int
    env: dict[str, str]
    timeout: float
    registry_dir: Path | None


# --- the daemons ------------------------------------------------------------------------------


@contextlib.contextmanager
def started(ws: Workspace, side: Side) -> Iterator[Daemon]:
    """``side``'s daemon, running for the whole benchmark, with the archive loaded once."""
    home = ws.base / side.name
    if side is DOCKERD:
        daemon_cm = running_dockerd(home)
    else:
        daemon_cm = running_hoist_serve(home, home / "root", command=HOIST_COMMAND, env=ws.env)
    with daemon_cm as daemon:
        docker(ws, daemon, "load", "--quiet", "--input", str(ws.archive))
        yield daemon


def docker(ws: Workspace, daemon: Daemon, *args: str) -> str:
    """An untimed ``docker`` command against ``daemon``; its stdout."""
    return run_checked(["docker", *args], timeout=ws.timeout, env=daemon.env(ws.env))


def reset_peak_rss(daemon: Daemon) -> bool:
    """Reset the daemon's RSS high-water mark (``clear_refs`` 5), so that the next read is this
    run's peak; False where the kernel does not let us."""
    try:
        Path(f"/proc/{daemon.process.pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib(daemon: Daemon) -> float:
    """The daemon's ``VmHWM``: its peak RSS since the last reset (or since it started)."""
    for line in Path(f"/proc/{daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / KIB
    raise BenchmarkError(f"no VmHWM for pid {daemon.process.pid}: is it still running?")


# --- one round of one daemon ------------------------------------------------------------------


def run_pair(ws: Workspace, side: Side, daemon: Daemon, round_: int) -> tuple[Run, Run]:
    """A cold push to a fresh registry and repository, then the same push again (no-op)."""
    repository = f"bench/{side.name}-r{round_}"
    with fresh_registry(ws.base, ws.registry_dir) as (run_dir, registry):
        target = f"{registry.host}/{repository}:{TAG}"
        docker(ws, daemon, "tag", SOURCE_NAME, target)
        try:
            cold = timed_push(ws, daemon, registry, target, run_dir / "cold", PUSHED)
            noop = timed_push(ws, daemon, registry, target, run_dir / "noop", EXISTS)
        finally:
            docker(ws, daemon, "rmi", target)
    return (
        Run(round_, side.cold.key, repository, cold[0].seconds, cold[1]),
        Run(round_, side.noop.key, repository, noop[0].seconds, noop[1]),
    )


def timed_push(
    ws: Workspace, daemon: Daemon, registry: LocalRegistry, target: str, log_dir: Path, status: str
) -> tuple[Measured, float]:
    """``docker push target``, timed; checked; with the daemon's peak RSS during it."""
    settle()
    reset_peak_rss(daemon)
    argv = ["docker", "push", target]
    measured = run_measured(argv, timeout=ws.timeout, log_dir=log_dir, env=daemon.env(ws.env))
    check_exit(measured, registry)
    peak = peak_rss_mib(daemon)
    check_output(measured, status, ws.layer_count)
    verify_pushed(ws, target)
    return measured, peak


def check_output(measured: Measured, status: str, layer_count: int) -> None:
    """Every layer ended as ``status`` ("Pushed" cold, "Layer already exists" no-op), or abort:
    a cold run that found a blob, or a no-op that sent one, measures something else."""
    try:
        output = parse_push(measured.stdout)
    except ValueError as exc:
        raise BenchmarkError(f"{' '.join(measured.argv)}: {exc}") from exc
    if output.final_statuses != [status] * layer_count:
        raise BenchmarkError(
            f"{' '.join(measured.argv)}: expected {layer_count} × {status!r}, got\n"
            f"{measured.stdout}"
        )


def verify_pushed(ws: Workspace, target: str) -> None:
    check_pushed(target, ws.image_id, ws.layer_count, timeout=ws.timeout, env=ws.env)


def run_rounds(ws: Workspace, daemons: dict[str, Daemon], rounds: int) -> list[Run]:
    """Each round runs every daemon's pair, in an order rotated per round."""
    runs: list[Run] = []
    for round_ in range(1, rounds + 1):
        for name in in_turn(list(daemons), round_):
            pair = run_pair(ws, SIDES[name], daemons[name], round_)
            runs.extend(pair)
            cold, noop = pair
            say(
                f"round {round_}/{rounds}  {name:<8} cold {cold.seconds:6.2f} s "
                f"{cold.peak_rss_mib:5.0f} MiB   no-op {noop.seconds:5.2f} s "
                f"{noop.peak_rss_mib:5.0f} MiB"
            )
    return runs


# --- the benchmark ----------------------------------------------------------------------------


def generate(base: Path, specs: Sequence[LayerSpec], args: argparse.Namespace) -> Workspace:
    """The uncompressed docker-archive of ``specs``, untimed."""
    archive = base / "image.tar"
    tars = base / "layer-tars"
    sample = write_docker_archive(archive, specs, [SOURCE_NAME], tars)
    shutil.rmtree(tars)  # the archive holds them now; keep the disk footprint down
    return Workspace(
        base,
        archive,
        str(sample.image_id),
        len(specs),
        child_env(base),
        args.timeout,
        args.registry_dir,
    )


def serve_benchmark(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    specs = [LayerSpec(args.layer_mib * MIB, seed=n) for n in range(1, args.layers + 1)]
    payload_mib = args.layers * args.layer_mib
    say(f"generating {args.layers} × {args.layer_mib} MiB (uncompressed archive) in {base}")
    ws = generate(base, specs, args)
    if HOIST.name in args.contenders:
        byte_compile_hoist()
    with contextlib.ExitStack() as stack:
        daemons = {name: stack.enter_context(started(ws, SIDES[name])) for name in args.contenders}
        versions = {name: daemon_version(ws, daemon) for name, daemon in daemons.items()}
        runs = run_rounds(ws, daemons, args.runs)
    contenders = [c for name in args.contenders for c in (SIDES[name].cold, SIDES[name].noop)]
    contenders.sort(key=lambda c: c.label)
    summaries = summarise(contenders, runs, payload_mib)
    print(
        f"\ndocker push of {args.layers} × {args.layer_mib} MiB random layers (loaded from an "
        f"uncompressed archive) to a local registry: cold = fresh registry and repository, "
        f"no-op = the same push again; registry storage in {registry_storage(ws.registry_dir)}; "
        f"median of {args.runs} runs.\nMiB/s = {payload_mib} MiB of uncompressed layer payload "
        f"/ median time. peak RSS = the daemon's during the run. vs dockerd = dockerd's median "
        f"time / this median time (>1: hoist serve is faster).\n"
    )
    print(table(summaries, peer="dockerd"))
    print(verdicts(summaries))
    return {
        "mode": "serve",
        "settings": {
            "runs": args.runs,
            "layers": args.layers,
            "layer_mib": args.layer_mib,
            "contenders": args.contenders,
            "registry_dir": registry_storage(ws.registry_dir),
        },
        "daemons": versions,
        "targets_hoist_over_dockerd": TARGETS,
        "payload_mib": payload_mib,
        "image_id": ws.image_id,
        "runs": [r.to_json() for r in runs],
        "summary": [s.to_json() for s in summaries],
    }


def daemon_version(ws: Workspace, daemon: Daemon) -> str:
    """What the daemon says it is, and the client's version (recorded with the runs)."""
    template = "{{.Server.Version}} (client {{.Client.Version}})"
    return docker(ws, daemon, "version", "--format", template).strip()


def verdicts(summaries: Sequence[Summary]) -> str:
    """One line per mode: hoist serve's median over dockerd's, against issue 14's target."""
    medians = {s.contender.key: s.median_seconds for s in summaries}
    lines = [""]
    for mode, target in TARGETS.items():
        hoist, dockerd = medians.get(f"hoist-{mode}"), medians.get(f"dockerd-{mode}")
        if hoist is None or dockerd is None:
            lines.append(f"{mode}: not compared (only {', '.join(medians)} ran)")
            continue
        ratio = hoist / dockerd
        verdict = "met" if ratio <= target else "NOT met"
        lines.append(
            f"{mode}: hoist serve / dockerd = {ratio:.2f}× (target ≤ {target}×: {verdict})"
        )
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--layers", type=int, default=8, help="layers per image (default 8)")
    parser.add_argument("--layer-mib", type=int, default=32, help="MiB per layer (default 32)")
    parser.add_argument(
        "--contenders",
        default="dockerd,hoist",
        help="which daemons push, comma-separated: dockerd, hoist (default both)",
    )
    parser.add_argument(
        "--out", type=Path, help="raw runs as JSON (default results/serve-<time>.json)"
    )
    add_run_options(parser, timeout=600)
    args = parser.parse_args(argv)
    args.registry_dir = args.registry_dir or default_registry_dir()
    args.contenders = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = sorted(set(args.contenders) - set(SIDES))
    if unknown or not args.contenders:
        parser.error(f"--contenders takes dockerd and/or hoist, not {args.contenders}")
    if min(args.runs, args.layers, args.layer_mib) < 1:
        parser.error("--runs, --layers and --layer-mib must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if HOIST.name in args.contenders and (missing := hoist_serve_unavailable(HOIST_COMMAND)):
        say(
            f"{missing}: nothing to compare dockerd with (--contenders dockerd times dockerd alone)"
        )
        return 1
    return run_benchmark(
        "serve",
        args.work_dir,
        args.out,
        partial(serve_benchmark, args),
        stopped="daemons and registries stopped",
        aborts=(BenchmarkError, DockerdUnavailable),
    ).code


if __name__ == "__main__":
    sys.exit(main())
