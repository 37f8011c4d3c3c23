"""Hoist against every peer: ``python -m benchmarks.compare [--quick] [--workloads A,D]``.

Generates the workloads (A 8 × 32 MiB random, B 4 × 64 MiB text, C 200 × 16 KiB, D a no-op
re-push of A, E one 2 GiB layer, R this machine's /usr/bin, /usr/lib and /usr/share, and the
50-image batch), then for each workload and source (the OCI layout, or the store) runs every
contender cold, in an order rotated per round, on a registry started for that run alone. It
prints a table of medians (wall time, MiB/s, peak RSS, CPU seconds, blob bytes the registry
received, requests, time over Hoist's), writes the raw runs as JSON and a PNG chart beside it.
See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import compare_contenders as peers_module
from benchmarks import serve
from benchmarks.compare_contenders import (
    HOIST_BY_SOURCE,
    HOIST_DAEMON_BY_SOURCE,
    NAMES,
    Peer,
    Plan,
    Setup,
)
from benchmarks.compare_workloads import (
    LAYOUT,
    QUICK,
    STORE,
    WORKLOADS,
    Generator,
    Sizes,
    Workload,
    generate,
)
from benchmarks.process import (
    REPO_ROOT,
    BenchmarkError,
    Measured,
    add_run_options,
    byte_compile_hoist,
    check_exit,
    check_pushed,
    child_env,
    cold_env,
    cpu_seconds_of,
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
    Run,
    Summary,
    format_table,
    run_benchmark,
    say,
    summarise,
)
from benchmarks.venv import (
    default_hoist_venv,
    default_venv,
    ensure_venv,
    install_hoist,
    versions,
)
from tests.support.docker_output import EXISTS, PUSHED
from tests.support.dockerd import Daemon, DockerdUnavailable, dockerd_unavailable, running_dockerd
from tests.support.registry import LocalRegistry


def _target_source(row: str) -> str:
    """What Hoist pushes from in a target's row: the row's own source (the batch: the store)."""
    return LAYOUT if row.endswith("/layout") else STORE


#: The issue's targets: (row, contender, Hoist's median time over the contender's, at most).
TIME_TARGETS = (
    ("A/layout", "curl", 1.15),
    ("A/layout", "skopeo-oci", 0.6),
    ("B/layout", "curl", 1.3),
    ("B/layout", "skopeo-oci", 1.0),
    ("C/layout", "curl", 1.0),
    ("C/layout", "skopeo-oci", 0.25),
    ("D/layout", "curl", 1.3),
    ("E/layout", "curl", 1.0),
    ("A/store", "docker", 0.25),
    ("R/store", "docker", 0.15),
    ("batch", "skopeo-archive", 0.25),
)
#: The same targets for Hoist through a warm hoist serve, which ``hoist push`` goes through
#: wherever one runs: (row, Hoist's contender, the other's, at most).
DAEMON_TARGETS = tuple(
    (row, HOIST_DAEMON_BY_SOURCE[_target_source(row)], other, bound)
    for row, other, bound in TIME_TARGETS
)
#: Hoist's peak RSS (MiB), at most.
RSS_TARGETS = (("D/layout", 40.0), ("E/layout", 50.0), ("A/layout", 50.0))
#: Hoist's bytes sent over docker push's, at most, by Hoist contender.
BYTES_TARGETS = (("R/store", "hoist-store", 1.10), ("R/store", "hoist-store-zstd", 0.95))
_REQUEST = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')
_SENTINEL = "/v2/?end-of-timed-run"


@dataclass(frozen=True)
class Row:
    """One line group of the report: a workload pushed from one source."""

    key: str
    workload: Workload
    source: str
    peers: list[Peer]
    #: The contenders left out, and why (footnotes).
    skipped: list[tuple[Peer, str]]

    @property
    def title(self) -> str:
        if self.workload.batch:
            return f"{self.workload.title}; Hoist and docker from the store, skopeo from both"
        return f"{self.workload.title}, from the {self.source}"

    @property
    def hoist_key(self) -> str:
        return HOIST_BY_SOURCE[STORE if self.workload.batch else self.source]


@dataclass(frozen=True)
class Bench:
    """What every run shares."""

    base: Path
    env: dict[str, str]
    timeout: float
    registry_dir: Path | None
    venv_python: Path
    hoist: list[str]
    daemon: Daemon | None


def make_rows(workloads: Sequence[Workload], peers: Sequence[Peer]) -> list[Row]:
    rows = []
    for workload in workloads:
        sources = ["both"] if workload.batch else list(workload.sources)
        for source in sources:
            key = workload.key if workload.batch else f"{workload.key}/{source}"
            mine = [p for p in peers if workload.batch or p.source == source]
            taking = [p for p in mine if p.cannot(workload) is None]
            skipped = [(p, why) for p in mine if (why := p.cannot(workload)) is not None]
            rows.append(Row(key, workload, source, taking, skipped))
    return rows


# --- one cold run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_rss_mib: float
    cpu_seconds: float
    #: What the registry spent on those commands' requests: with the client's CPU against
    #: wall time × cores, whether the machine, not the client, was the bound.
    registry_cpu_seconds: float


def run_commands(
    commands: Sequence[Sequence[str]],
    bench: Bench,
    run_dir: Path,
    registry: LocalRegistry,
    tag: str,
    daemon: Daemon | None = None,
) -> Timed:
    """Run ``commands`` one after the other, each measured; their times and CPU added up, the
    highest peak, and the registry's CPU seconds meanwhile. A client of a ``daemon`` (``docker
    push``, ``hoist push -H``) is measured with it: the higher of the two peak RSS, and the
    daemon's CPU seconds added to the client's."""
    seconds = peak = cpu = 0.0
    env = cold_env(bench.env if daemon is None else daemon.env(bench.env), run_dir)
    settle()
    if daemon is not None:
        serve.reset_peak_rss(daemon)
        daemon_cpu = cpu_seconds_of(daemon.process.pid)
    registry_cpu = cpu_seconds_of(registry.process.pid)
    for n, argv in enumerate(commands, 1):
        log_dir = run_dir / "logs" / f"{tag}-{n:03d}"
        measured = run_measured(argv, timeout=bench.timeout, log_dir=log_dir, env=env)
        check_exit(measured, registry)
        seconds += measured.seconds
        cpu += measured.cpu_seconds
        peak = max(peak, measured.peak_rss_mib)
    if daemon is not None:
        peak = max(peak, serve.peak_rss_mib(daemon))
        cpu += cpu_seconds_of(daemon.process.pid) - daemon_cpu
    return Timed(seconds, peak, cpu, cpu_seconds_of(registry.process.pid) - registry_cpu)


def run_once(bench: Bench, row: Row, peer: Peer, round_: int) -> Run:
    """Push once to a fresh registry; check what arrived; the measurements."""
    prefix = f"r{round_}-{peer.contender.key}"
    with fresh_registry(bench.base, bench.registry_dir, access_log=True) as (run_dir, registry):
        setup = Setup(
            row.workload,
            run_dir,
            registry.host,
            prefix,
            bench.env,
            bench.timeout,
            bench.venv_python,
            bench.hoist,
            bench.daemon,
        )
        with peer.plan(setup) as plan:
            timed, log_from = _push(bench, row, plan, run_dir, registry)
            verify_pushed(bench, setup)
        sent, requests = registry_traffic(registry, log_from)
    return Run(
        round_,
        peer.contender.key,
        f"{prefix}/…",
        timed.seconds,
        timed.peak_rss_mib,
        cpu_seconds=timed.cpu_seconds,
        registry_cpu_seconds=timed.registry_cpu_seconds,
        sent_bytes=sent,
        requests=requests,
    )


def _push(
    bench: Bench, row: Row, plan: Plan, run_dir: Path, registry: LocalRegistry
) -> tuple[Timed, int]:
    if plan.first:
        run_commands(plan.first, bench, run_dir, registry, "first", plan.daemon)
    log_from = registry.log_path.stat().st_size
    timed = run_commands(plan.commands, bench, run_dir, registry, "timed", plan.daemon)
    _mark_end(registry)
    if plan.commands[0][0] == "docker" and not row.workload.batch:
        check_docker_statuses(run_dir, row)
    return timed, log_from


def check_docker_statuses(run_dir: Path, row: Row) -> None:
    """Every layer "Pushed" (cold) or "Layer already exists" (no-op), as benchmarks.serve checks."""
    status = EXISTS if row.workload.noop else PUSHED
    for log_dir in sorted((run_dir / "logs").glob("timed-*")):
        out = (log_dir / "stdout").read_text()
        measured = Measured(["docker", "push"], 0.0, 0, 0, False, out, "")
        serve.check_output(measured, status, row.workload.images[0].layer_count)


def verify_pushed(bench: Bench, setup: Setup) -> None:
    for image, target in setup.pairs():
        check_pushed(
            target, image.image_id, image.layer_count, timeout=bench.timeout, env=bench.env
        )


# --- what the registry received ---------------------------------------------------------------


def _mark_end(registry: LocalRegistry) -> None:
    """A request of the harness's own after the timed commands, waited for in the access log:
    every request of theirs was logged before it (the log is written after each response)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{registry.url}{_SENTINEL}", timeout=10):
        pass
    deadline = time.monotonic() + 5
    while _SENTINEL not in registry.log() and time.monotonic() < deadline:
        time.sleep(0.02)


def registry_traffic(registry: LocalRegistry, log_from: int) -> tuple[int, int]:
    """From the registry's access log, between ``log_from`` and the end mark: the bytes of every
    blob upload it completed (each upload counted, a mount counting nothing; sizes from its blob
    store) and the number of requests it answered."""
    with registry.log_path.open("rb") as log:
        log.seek(log_from)
        text = log.read().decode(errors="replace")
    sent = requests = 0
    for match in _REQUEST.finditer(text):
        uri = match["uri"]
        if uri == _SENTINEL:
            break
        requests += 1
        if match["status"] == "201" and match["method"] in ("PUT", "POST"):
            sent += _uploaded_size(registry, uri)
    return sent, requests


def _uploaded_size(registry: LocalRegistry, uri: str) -> int:
    path, _, query = uri.partition("?")
    digests = urllib.parse.parse_qs(query).get("digest")
    if "/blobs/uploads/" not in path or not digests:
        return 0
    algorithm, encoded = digests[0].split(":", 1)
    blobs = registry.storage / "docker" / "registry" / "v2" / "blobs"
    return (blobs / algorithm / encoded[:2] / encoded / "data").stat().st_size


# --- rounds and the report --------------------------------------------------------------------


def run_row(bench: Bench, row: Row, rounds: int) -> list[Run]:
    runs: list[Run] = []
    for round_ in range(1, rounds + 1):
        for peer in in_turn(row.peers, round_):
            run = run_once(bench, row, peer, round_)
            runs.append(run)
            say(
                f"{row.key:<9} round {round_}/{rounds}  {peer.contender.label:<38}"
                f" {run.seconds:7.2f} s {run.peak_rss_mib:6.0f} MiB"
                f" {run.cpu_seconds or 0:6.2f} cpu-s"
                f" {run.registry_cpu_seconds or 0:6.2f} registry cpu-s"
                f" {(run.sent_bytes or 0) / MIB:8.1f} MiB sent"
                f" {run.requests} requests"
            )
    return runs


_HEADERS = (
    "workload",
    "contender",
    "median s",
    "min–max s",
    "MiB/s",
    "peak RSS MiB",
    "CPU s",
    "registry CPU s",
    "sent MiB",
    "requests",
    "÷ Hoist",
)


def table(rows: Sequence[Row], summaries: dict[str, list[Summary]]) -> tuple[str, list[str]]:
    """The table, and its footnotes (why a contender shows —)."""
    lines: list[Sequence[str]] = [_HEADERS]
    notes: list[str] = []
    for row in rows:
        if len(lines) > 1:
            lines.append(())
        hoist = {s.contender.key: s.median_seconds for s in summaries[row.key]}.get(row.hoist_key)
        for s in summaries[row.key]:
            ratio = f"{s.median_seconds / hoist:.2f}" if hoist else "—"
            lines.append(
                (
                    row.key,
                    s.contender.label,
                    f"{s.median_seconds:.2f}",
                    f"{s.min_seconds:.2f}–{s.max_seconds:.2f}",
                    f"{s.mib_per_second:.0f}",
                    f"{s.median_rss_mib:.0f}",
                    _opt(s.cpu_seconds, ".2f"),
                    _opt(s.registry_cpu_seconds, ".2f"),
                    _opt(s.sent_mib, ".1f"),
                    _opt(s.requests, ".0f"),
                    ratio,
                )
            )
        for peer, why in row.skipped:
            if why not in notes:
                notes.append(why)
            mark = f"— [{notes.index(why) + 1}]"
            lines.append((row.key, peer.contender.label, mark, *([""] * 8)))
    return format_table(lines), [f"[{n}] {why}" for n, why in enumerate(notes, 1)]


def _opt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "—"


def verdicts(summaries: dict[str, list[Summary]]) -> list[str]:
    """The issue's targets, each with its figure from this run: met or not."""
    medians = {(row, s.contender.key): s for row, summary in summaries.items() for s in summary}
    lines = []
    for row, peer, bound in TIME_TARGETS:
        hoist_key = HOIST_BY_SOURCE[_target_source(row)]
        hoist, other = medians.get((row, hoist_key)), medians.get((row, peer))
        if hoist and other:
            ratio = hoist.median_seconds / other.median_seconds
            lines.append(_verdict(f"{row}: Hoist / {peer} time", ratio, bound, "×"))
    for row, key, peer, bound in DAEMON_TARGETS:
        hoist, other = medians.get((row, key)), medians.get((row, peer))
        if hoist and other:
            ratio = hoist.median_seconds / other.median_seconds
            lines.append(_verdict(f"{row}: {key} / {peer} time", ratio, bound, "×"))
    for row, bound in RSS_TARGETS:
        if hoist := medians.get((row, HOIST_BY_SOURCE[LAYOUT])):
            lines.append(_verdict(f"{row}: Hoist peak RSS", hoist.median_rss_mib, bound, " MiB"))
    for row, key, bound in BYTES_TARGETS:
        hoist, docker = medians.get((row, key)), medians.get((row, "docker"))
        if hoist and docker and hoist.sent_mib and docker.sent_mib:
            ratio = hoist.sent_mib / docker.sent_mib
            lines.append(_verdict(f"{row}: {key} bytes / docker's", ratio, bound, "×"))
    return lines


def _verdict(what: str, value: float, bound: float, unit: str) -> str:
    met = "met" if value <= bound else "NOT met"
    return f"{what} = {value:.2f}{unit} (target ≤ {bound}{unit}: {met})"


def compare(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    env = child_env(base)
    byte_compile_hoist()  # the checkout's modules: its store is made by ``hoist load``
    hoist = install_hoist(args.hoist_venv, REPO_ROOT)
    needs_venv = bool({"dxf", "oras", "drca"} & set(args.contenders)) or args.chart
    venv_python = ensure_venv(args.venv) if needs_venv else Path(sys.executable)
    workloads = generate(
        args.workloads,
        args.sizes,
        Generator(base / "workloads", env, args.timeout, args.registry_dir),
    )
    with contextlib.ExitStack() as stack:
        daemon, docker_skipped = _dockerd(stack, args, base, workloads, env)
        all_peers = peers_module.peers(
            docker_unavailable=docker_skipped,
            zstd_unavailable=peers_module.zstd_unsupported(hoist, env),
        )
        rows = make_rows(workloads, peers_module.select(all_peers, args.contenders))
        bench = Bench(base, env, args.timeout, args.registry_dir, venv_python, hoist, daemon)
        runs = {row.key: run_row(bench, row, args.runs) for row in rows}
    summaries = {
        row.key: summarise(
            [p.contender for p in row.peers], runs[row.key], row.workload.payload_mib
        )
        for row in rows
    }
    text, notes = table(rows, summaries)
    print(_preamble(args, rows))
    print(text)
    print("\n".join(["", *notes, "", *verdicts(summaries)]))
    return {
        "mode": "compare",
        "settings": {
            "runs": args.runs,
            "workloads": args.workloads,
            "contenders": args.contenders,
            "sizes": vars(args.sizes),
            "registry_dir": registry_storage(args.registry_dir),
        },
        "peers": versions(venv_python) if needs_venv else {},
        "rows": [_row_json(row, runs[row.key], summaries[row.key]) for row in rows],
        "notes": notes,
        "verdicts": verdicts(summaries),
        "load_average_1min_end": os.getloadavg()[0],
        "cores": os.cpu_count(),
    }


def _row_json(row: Row, runs: list[Run], summaries: list[Summary]) -> dict[str, Any]:
    return {
        "row": row.key,
        "title": row.title,
        "workload": row.workload.key,
        "source": row.source,
        "hoist": row.hoist_key,
        "payload_mib": row.workload.payload_mib,
        "layout_blob_mib": row.workload.layout_bytes() / MIB,
        "images": [
            {"repository": i.repository, "image_id": i.image_id, "layers": i.layer_count}
            for i in row.workload.images
        ],
        "skipped": {p.contender.key: why for p, why in row.skipped},
        "runs": [r.to_json() for r in runs],
        "summary": [s.to_json() for s in summaries],
    }


def _preamble(args: argparse.Namespace, rows: Sequence[Row]) -> str:
    titles = "\n".join(f"  {row.key:<9} {row.title}" for row in rows)
    return (
        f"\nCold pushes to a local CNCF Distribution registry (fresh registry per run, storage in "
        f"{registry_storage(args.registry_dir)}), median of {args.runs} runs, order rotated per "
        f"round.\n{titles}\n"
        f"MiB/s = uncompressed layer payload / median time (D: the payload that was not sent). "
        f"peak RSS, CPU s = the pushing process and what it waited for (docker: dockerd's). "
        f"registry CPU s = the registry's own over the same commands ({os.cpu_count()} cores: "
        f"CPU s + registry CPU s near cores × median s says the machine, not the pusher, was the "
        f"bound). sent MiB = blob bytes the registry received in completed uploads. requests = "
        f"requests the registry answered. ÷ Hoist = this median time / Hoist's in the row (>1: "
        f"Hoist is faster).\n"
    )


@contextlib.contextmanager
def _docker_images(
    daemon: Daemon, workloads: Sequence[Workload], env: dict[str, str], timeout: float
) -> Iterator[None]:
    for workload in workloads:
        if STORE in workload.sources:
            for image in workload.images:
                argv = ["docker", "load", "--quiet", "--input", str(image.archive)]
                run_checked(argv, timeout=timeout, env=daemon.env(env))
    yield


def _dockerd(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    base: Path,
    workloads: Sequence[Workload],
    env: dict[str, str],
) -> tuple[Daemon | None, str | None]:
    if "docker" not in args.contenders or not any(STORE in w.sources for w in workloads):
        return None, None
    if (why := dockerd_unavailable()) is not None:
        return None, why
    say("starting a private dockerd (tests/support/dockerd.py) and loading the archives")
    try:
        daemon = stack.enter_context(running_dockerd(base / "dockerd"))
    except DockerdUnavailable as exc:
        return None, str(exc).splitlines()[0]
    stack.enter_context(_docker_images(daemon, workloads, env, args.timeout))
    return daemon, None


# --- command line -----------------------------------------------------------------------------


def _names(value: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{what} are {', '.join(allowed)}; not {value!r}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("--runs", type=int, help="rounds (default 5; 1 with --quick)")
    parser.add_argument(
        "--workloads",
        type=lambda v: _names(v, WORKLOADS, "workloads"),
        default=list(WORKLOADS),
        help=f"comma-separated, of {','.join(WORKLOADS)} (default all)",
    )
    parser.add_argument(
        "--contenders",
        type=lambda v: _names(v, NAMES, "contenders"),
        default=list(NAMES),
        help=f"comma-separated, of {','.join(NAMES)} (default all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes ({QUICK.a_layers} × {QUICK.a_mib} MiB for A, {QUICK.c_layers} layers "
        f"for C, {QUICK.e_mib} MiB for E, ≤ {QUICK.r_mib} MiB per R layer, {QUICK.batch_images} "
        "batch images…) and 1 round",
    )
    parser.add_argument("--e-mib", type=int, help="E's layer size in MiB (default 2048)")
    parser.add_argument("--r-mib", type=int, help="the cap on each R layer in MiB (default 96)")
    parser.add_argument("--batch-images", type=int, help="images in the batch (default 50)")
    parser.add_argument("--out", type=Path, help="JSON (default results/compare-<time>.json)")
    parser.add_argument("--no-chart", dest="chart", action="store_false", help="no PNG chart")
    parser.add_argument(
        "--venv", type=Path, default=default_venv(), help="the harness's venv (default %(default)s)"
    )
    parser.add_argument(
        "--hoist-venv",
        type=Path,
        default=default_hoist_venv(),
        help="the venv this checkout's Hoist is installed into and run from (default %(default)s)",
    )
    add_run_options(parser, timeout=900)
    args = parser.parse_args(argv)
    args.registry_dir = args.registry_dir or default_registry_dir()
    sizes = QUICK if args.quick else Sizes()
    overrides = {"e_mib": args.e_mib, "r_mib": args.r_mib, "batch_images": args.batch_images}
    args.sizes = replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    args.runs = args.runs or (1 if args.quick else 5)
    if min(args.runs, *vars(args.sizes).values()) < 1:
        parser.error("--runs and the sizes must be at least 1")
    return args


def draw_chart(python: Path, json_path: Path) -> None:
    png = json_path.with_suffix(".png")
    chart = Path(__file__).resolve().parent / "chart.py"
    run_checked([str(python), str(chart), str(json_path), str(png)], timeout=300)
    say(f"chart written to {png}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    outcome = run_benchmark(
        "compare",
        args.work_dir,
        args.out,
        partial(compare, args),
        stopped="registries and dockerd stopped",
    )
    if outcome.out is not None and args.chart:
        try:
            draw_chart(ensure_venv(args.venv), outcome.out)
        except BenchmarkError as exc:
            say(f"no chart:\n{exc}")
            return 1
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
