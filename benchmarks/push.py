"""Push benchmark: Hoist against skopeo, cold, on a real registry on loopback.

``python -m benchmarks.push [--runs 5] [--layers 8] [--layer-mib 32] [--out FILE]`` generates an
image of random layers once, then in each round pushes it with every contender in turn, each
to a registry started for that run alone and stopped after it. ``--memory`` instead pushes one
large single-layer image from the store once and reports Hoist's peak RSS. See README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.process import (
    BenchmarkError,
    add_run_options,
    byte_compile_hoist,
    check_exit,
    check_pushed,
    child_env,
    cold_env,
    default_registry_dir,
    fresh_registry,
    hoist_argv,
    in_turn,
    registry_storage,
    run_checked,
    run_measured,
    settle,
    skopeo_copy_argv,
)
from benchmarks.report import (
    MIB,
    Contender,
    Run,
    run_benchmark,
    say,
    summarise,
    table,
)
from tests.support.sample import LayerSpec, write_docker_archive, write_oci_layout

#: The name the docker-archive carries; ``hoist load`` files the image under it.
SOURCE_NAME = "bench/sample:latest"
TAG = "latest"
#: The issue's bound for a push of one 256 MiB layer from the store.
MEMORY_LIMIT_MIB = 100

HOIST_STORE = Contender("hoist-store", "1 hoist push (store, gzip)", peer="skopeo-archive")
HOIST_LAYOUT = Contender("hoist-layout", "2 hoist push --from oci-layout", peer="skopeo-oci")
SKOPEO_OCI = Contender("skopeo-oci", "3 skopeo copy oci:")
SKOPEO_ARCHIVE = Contender("skopeo-archive", "4 skopeo copy docker-archive: (gzip)")
CONTENDERS = (HOIST_STORE, HOIST_LAYOUT, SKOPEO_OCI, SKOPEO_ARCHIVE)


@dataclass(frozen=True)
class Workspace:
    """What is generated once, untimed, and shared by every run."""

    base: Path
    archive: Path
    layout: Path | None
    store: Path
    image_id: str
    layer_count: int
    env: dict[str, str]
    timeout: float
    #: Where the runs' registries keep their blobs (None: in each run's directory).
    registry_dir: Path | None = None


# --- generation -------------------------------------------------------------------------------


def generate(
    base: Path,
    specs: Sequence[LayerSpec],
    *,
    with_layout: bool,
    timeout: float,
    registry_dir: Path | None,
) -> Workspace:
    """Write the docker-archive (and the OCI layout) of ``specs``; load the archive into a store."""
    env = child_env(base)
    byte_compile_hoist()
    archive = base / "image.tar"
    tars = base / "layer-tars"
    tars.mkdir()
    sample = write_docker_archive(archive, specs, [SOURCE_NAME], tars)
    shutil.rmtree(tars)  # the archive holds them now; keep the disk footprint down
    layout = None
    if with_layout:
        layout = base / "layout"
        oci = write_oci_layout(layout, specs, TAG)
        if oci.image_id != sample.image_id:
            raise BenchmarkError("the OCI layout and the docker-archive hold different images")
    store = base / "store"
    run_checked(hoist_argv(store, "load", "-q", "-i", str(archive)), timeout=timeout, env=env)
    image_id = str(sample.image_id)
    return Workspace(base, archive, layout, store, image_id, len(specs), env, timeout, registry_dir)


# --- contenders -------------------------------------------------------------------------------


def _hoist_from_store(ws: Workspace, run_dir: Path, target: str) -> list[str]:
    # A private copy of the store per run: no push metadata ("pushed where") from earlier runs.
    root = run_dir / "store"
    shutil.copytree(ws.store, root, symlinks=True)
    run_checked(hoist_argv(root, "tag", SOURCE_NAME, target), timeout=ws.timeout, env=ws.env)
    return hoist_argv(root, "push", "-q", target)


def _hoist_from_layout(ws: Workspace, run_dir: Path, target: str) -> list[str]:
    return hoist_argv(run_dir / "store", "push", "-q", "--from", str(ws.layout), target)


def _skopeo_from_layout(ws: Workspace, run_dir: Path, target: str) -> list[str]:
    return skopeo_copy_argv(f"oci:{ws.layout}:{TAG}", target)


def _skopeo_from_archive(ws: Workspace, run_dir: Path, target: str) -> list[str]:
    return skopeo_copy_argv(f"docker-archive:{ws.archive}", target)


#: For each contender: the untimed preparation of a run, returning the command to time.
PREPARE: dict[str, Callable[[Workspace, Path, str], list[str]]] = {
    HOIST_STORE.key: _hoist_from_store,
    HOIST_LAYOUT.key: _hoist_from_layout,
    SKOPEO_OCI.key: _skopeo_from_layout,
    SKOPEO_ARCHIVE.key: _skopeo_from_archive,
}


# --- one cold run -----------------------------------------------------------------------------


def run_once(ws: Workspace, contender: Contender, round_: int) -> Run:
    """Push once to a fresh registry and repository; check what arrived; the measurements."""
    repository = f"bench/{contender.key}-r{round_}"
    with fresh_registry(ws.base, ws.registry_dir) as (run_dir, registry):
        target = f"{registry.host}/{repository}:{TAG}"
        argv = PREPARE[contender.key](ws, run_dir, target)
        env = cold_env(ws.env, run_dir)
        settle()
        measured = run_measured(argv, timeout=ws.timeout, log_dir=run_dir / "logs", env=env)
        check_exit(measured, registry)
        verify_pushed(ws, target)
    return Run(round_, contender.key, repository, measured.seconds, measured.peak_rss_mib)


def verify_pushed(ws: Workspace, target: str) -> None:
    check_pushed(target, ws.image_id, ws.layer_count, timeout=ws.timeout, env=ws.env)


# --- the two modes ----------------------------------------------------------------------------


def run_rounds(ws: Workspace, rounds: int) -> list[Run]:
    """Each round pushes with every contender, in an order rotated per round, so machine noise
    hits all alike."""
    runs: list[Run] = []
    for round_ in range(1, rounds + 1):
        for contender in in_turn(CONTENDERS, round_):
            run = run_once(ws, contender, round_)
            runs.append(run)
            say(
                f"round {round_}/{rounds}  {contender.label:<38} {run.seconds:7.2f} s"
                f"  {run.peak_rss_mib:6.0f} MiB"
            )
    return runs


def push_benchmark(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    specs = [LayerSpec(args.layer_mib * MIB, seed=n) for n in range(1, args.layers + 1)]
    payload_mib = args.layers * args.layer_mib
    say(f"generating {args.layers} × {args.layer_mib} MiB (archive, OCI layout, store) in {base}")
    ws = generate(
        base, specs, with_layout=True, timeout=args.timeout, registry_dir=args.registry_dir
    )
    runs = run_rounds(ws, args.runs)
    summaries = summarise(CONTENDERS, runs, payload_mib)
    print(
        f"\nCold push of {args.layers} × {args.layer_mib} MiB random layers to a local registry "
        f"(fresh registry and repository per run, registry storage in "
        f"{registry_storage(ws.registry_dir)}), median of {args.runs} runs.\n"
        f"MiB/s = {payload_mib} MiB of uncompressed layer payload / median time. "
        f"vs skopeo = skopeo's median time / this median time (>1: Hoist is faster); "
        f"1 is compared with 4, 2 with 3.\n"
    )
    print(table(summaries))
    return {
        "mode": "push",
        "settings": {
            "runs": args.runs,
            "layers": args.layers,
            "layer_mib": args.layer_mib,
            "registry_dir": registry_storage(ws.registry_dir),
        },
        "payload_mib": payload_mib,
        "layout_blob_bytes": _layout_layer_bytes(ws),
        "image_id": ws.image_id,
        "runs": [r.to_json() for r in runs],
        "summary": [s.to_json() for s in summaries],
    }


def memory_benchmark(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    say(f"generating one {args.memory_mib} MiB layer (archive, store) in {base}")
    specs = [LayerSpec(args.memory_mib * MIB, seed=1)]
    ws = generate(
        base, specs, with_layout=False, timeout=args.timeout, registry_dir=args.registry_dir
    )
    run = run_once(ws, HOIST_STORE, 1)
    verdict = "within" if run.peak_rss_mib < MEMORY_LIMIT_MIB else "OVER"
    print(
        f"\nhoist push (store) of one {args.memory_mib} MiB layer: {run.seconds:.2f} s, "
        f"peak RSS {run.peak_rss_mib:.1f} MiB ({verdict} the {MEMORY_LIMIT_MIB} MiB limit)"
    )
    return {
        "mode": "memory",
        "settings": {"layer_mib": args.memory_mib},
        "limit_mib": MEMORY_LIMIT_MIB,
        "within_limit": run.peak_rss_mib < MEMORY_LIMIT_MIB,
        "runs": [run.to_json()],
    }


def _layout_layer_bytes(ws: Workspace) -> int:
    assert ws.layout is not None
    return sum(p.stat().st_size for p in (ws.layout / "blobs" / "sha256").iterdir())


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.push", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--layers", type=int, default=8, help="layers per image (default 8)")
    parser.add_argument("--layer-mib", type=int, default=32, help="MiB per layer (default 32)")
    parser.add_argument(
        "--out", type=Path, help="raw runs as JSON (default results/<mode>-<time>.json)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="push one big layer from the store; report peak RSS"
    )
    parser.add_argument("--memory-mib", type=int, default=256, help="its size (default 256)")
    add_run_options(parser, timeout=600)
    args = parser.parse_args(argv)
    args.registry_dir = args.registry_dir or default_registry_dir()
    if min(args.runs, args.layers, args.layer_mib, args.memory_mib) < 1:
        parser.error("--runs, --layers, --layer-mib and --memory-mib must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = memory_benchmark if args.memory else push_benchmark
    kind = "memory" if args.memory else "push"
    outcome = run_benchmark(kind, args.work_dir, args.out, partial(bench, args))
    if outcome.result is not None and args.memory and not outcome.result["within_limit"]:
        return 1
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
