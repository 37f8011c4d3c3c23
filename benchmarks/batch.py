"""Batch benchmark: many images that share layers, one ``hoist push`` against a loop of skopeo.

``python -m benchmarks.batch [--runs 3] [--images 50] [--out FILE]`` generates N images once,
each five shared 4 MiB layers (the same in every image) and one 1 MiB layer of its own. In each
round it pushes all N with every contender in turn, each to a registry started for that run
alone: Hoist with one command for every ref, skopeo (and docker, where a daemon answers) with one
command per image, as a CI loop does. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.process import (
    BenchmarkError,
    StoredBlobs,
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
    stored_blobs,
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
from engine import Engine, logs
from tests.support.registry import LocalRegistry
from tests.support.sample import LayerSpec, write_docker_archive, write_oci_layout

TAG = "latest"
SHARED_LAYERS = 5
SHARED_LAYER_MIB = 4
UNIQUE_LAYER_MIB = 1
LAYER_COUNT = SHARED_LAYERS + 1
IMAGE_MIB = SHARED_LAYERS * SHARED_LAYER_MIB + UNIQUE_LAYER_MIB
#: The unique layers' seeds start here, clear of the shared layers' seeds 1…5.
UNIQUE_SEED_BASE = 1000
#: The issue's goal: the skopeo loop takes at least this many times Hoist's time.
TARGET_RATIO = 3.0

HOIST = Contender("hoist-batch", "1 hoist push (store, gzip), all refs", peer="skopeo-archive-loop")
SKOPEO_ARCHIVE = Contender("skopeo-archive-loop", "2 skopeo copy docker-archive: loop")
SKOPEO_OCI = Contender("skopeo-oci-loop", "3 skopeo copy oci: loop")
SKOPEO_UNCACHED = Contender(
    "skopeo-archive-loop-uncached", "4 skopeo copy docker-archive: loop, no cache"
)
DOCKER = Contender("docker-loop", "5 docker push loop")
#: Contenders whose every command starts with an empty skopeo blob-info cache, as in a fresh
#: container: skopeo then knows of no blob it pushed before, so it mounts nothing and gzips and
#: sends every layer of every image. The others share one cache across a run's commands.
UNCACHED = frozenset({SKOPEO_UNCACHED.key})


@dataclass(frozen=True)
class BatchImage:
    """One image of the batch: its archive, its name in the OCI layout and its config digest."""

    repository: str
    ref_name: str
    archive: Path
    image_id: str

    @property
    def source(self) -> str:
        """The name ``hoist load`` and ``docker load`` give it, from the archive's RepoTags."""
        return f"{self.repository}:{TAG}"

    def target(self, host: str) -> str:
        return f"{host}/{self.repository}:{TAG}"


@dataclass(frozen=True)
class BatchWorkspace:
    """What is generated once, untimed, and shared by every run."""

    base: Path
    images: list[BatchImage]
    layout: Path
    store: Path
    env: dict[str, str]
    timeout: float
    #: Where the runs' registries keep their blobs (None: in each run's directory).
    registry_dir: Path | None = None

    @property
    def expected_blobs(self) -> int:
        """Distinct blobs a registry holds after the batch: the shared layers once, and per
        image its own layer, config and manifest."""
        return SHARED_LAYERS + 3 * len(self.images)


# --- generation -------------------------------------------------------------------------------


def layer_specs(index: int) -> list[LayerSpec]:
    """Image ``index``'s layers: the shared ones, the same seeds in every image, then its own."""
    shared = [LayerSpec(SHARED_LAYER_MIB * MIB, seed=s) for s in range(1, SHARED_LAYERS + 1)]
    return [*shared, LayerSpec(UNIQUE_LAYER_MIB * MIB, seed=UNIQUE_SEED_BASE + index)]


def _write_image(base: Path, index: int, width: int) -> BatchImage:
    """Write image ``index`` as a docker-archive and into the shared OCI layout; check both."""
    ref_name = f"img{index:0{width}d}"
    repository = f"bench/{ref_name}"
    specs = layer_specs(index)
    archive = base / "archives" / f"{ref_name}.tar"
    archive.parent.mkdir(exist_ok=True)
    sample = write_docker_archive(archive, specs, [f"{repository}:{TAG}"], base / "layer-tars")
    oci = write_oci_layout(base / "layout", specs, ref_name)
    if oci.image_id != sample.image_id:
        raise BenchmarkError(f"{ref_name}: the OCI layout and the docker-archive differ")
    return BatchImage(repository, ref_name, archive, str(sample.image_id))


def generate(
    base: Path, count: int, *, timeout: float, registry_dir: Path | None
) -> BatchWorkspace:
    """Write every image's archive and layout entry; load each archive into one store."""
    env = child_env(base)
    byte_compile_hoist()
    width = max(2, len(str(count)))
    images = [_write_image(base, n, width) for n in range(1, count + 1)]
    shutil.rmtree(base / "layer-tars")  # the archives hold them now; keep the disk footprint down
    store = base / "store"
    for image in images:
        load = hoist_argv(store, "load", "-q", "-i", str(image.archive))
        run_checked(load, timeout=timeout, env=env)
    return BatchWorkspace(base, images, base / "layout", store, env, timeout, registry_dir)


# --- contenders -------------------------------------------------------------------------------

#: A contender's untimed preparation of a run: given the registry's host, the commands to time,
#: run one after the other; leaving the block undoes whatever the preparation did outside run_dir.
Prepare = Callable[[BatchWorkspace, Path, str], AbstractContextManager[list[list[str]]]]


async def _tag_all(root: Path, images: Sequence[BatchImage], host: str) -> None:
    # In process: fifty `hoist tag` commands would add an interpreter start each to the setup.
    async with Engine(root) as engine:
        for image in images:
            await engine.tag(image.source, image.target(host))


@contextlib.contextmanager
def _hoist_batch(ws: BatchWorkspace, run_dir: Path, host: str) -> Iterator[list[list[str]]]:
    # A private copy of the store per run: no push metadata ("pushed where") from earlier runs.
    root = run_dir / "store"
    shutil.copytree(ws.store, root, symlinks=True)
    asyncio.run(_tag_all(root, ws.images, host))
    yield [hoist_argv(root, "push", "-q", *(image.target(host) for image in ws.images))]


@contextlib.contextmanager
def _skopeo_archive_loop(ws: BatchWorkspace, run_dir: Path, host: str) -> Iterator[list[list[str]]]:
    yield [
        skopeo_copy_argv(f"docker-archive:{image.archive}", image.target(host))
        for image in ws.images
    ]


@contextlib.contextmanager
def _skopeo_oci_loop(ws: BatchWorkspace, run_dir: Path, host: str) -> Iterator[list[list[str]]]:
    yield [
        skopeo_copy_argv(f"oci:{ws.layout}:{image.ref_name}", image.target(host))
        for image in ws.images
    ]


@contextlib.contextmanager
def _docker_loop(ws: BatchWorkspace, run_dir: Path, host: str) -> Iterator[list[list[str]]]:
    # The images were loaded into the daemon once (see docker_loaded); each run tags them for its
    # own registry and untags them afterwards.
    targets = [image.target(host) for image in ws.images]
    for image, target in zip(ws.images, targets, strict=True):
        run_checked(["docker", "tag", image.source, target], timeout=ws.timeout, env=ws.env)
    try:
        yield [["docker", "push", "--quiet", target] for target in targets]
    finally:
        run_checked(["docker", "rmi", *targets], timeout=ws.timeout, env=ws.env)


PREPARE: dict[str, Prepare] = {
    HOIST.key: _hoist_batch,
    SKOPEO_ARCHIVE.key: _skopeo_archive_loop,
    SKOPEO_OCI.key: _skopeo_oci_loop,
    SKOPEO_UNCACHED.key: _skopeo_archive_loop,
    DOCKER.key: _docker_loop,
}


def docker_unavailable(env: dict[str, str]) -> str | None:
    """Why ``docker push`` cannot take part here, or None when a Docker daemon answers."""
    if shutil.which("docker") is None:
        return "no `docker` command on PATH"
    try:
        info = subprocess.run(
            ["docker", "info"], capture_output=True, text=True, timeout=30, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        why = info.stderr.strip().splitlines()
        return f"`docker info` exited {info.returncode}" + (f": {why[-1]}" if why else "")
    return None


@contextlib.contextmanager
def docker_loaded(ws: BatchWorkspace) -> Iterator[None]:
    """The batch's images in the Docker daemon for the duration of the benchmark."""
    sources = [image.source for image in ws.images]
    try:
        for image in ws.images:
            docker_load = ["docker", "load", "--quiet", "--input", str(image.archive)]
            run_checked(docker_load, timeout=ws.timeout, env=ws.env)
        yield
    finally:
        with contextlib.suppress(BenchmarkError):
            run_checked(["docker", "rmi", *sources], timeout=ws.timeout, env=ws.env)


# --- one cold run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """A contender's commands of one run: their wall times added up, the highest peak RSS."""

    seconds: float
    peak_rss_mib: float


def run_commands(
    commands: Sequence[Sequence[str]],
    *,
    ws: BatchWorkspace,
    run_dir: Path,
    registry: LocalRegistry,
    cache_per_command: bool,
) -> Timed:
    """Run ``commands`` one after the other, each measured; abort at the first that fails."""
    seconds = peak = 0.0
    settle()
    for n, argv in enumerate(commands, 1):
        cache_dir = run_dir / "caches" / f"{n:03d}" if cache_per_command else run_dir
        cache_dir.mkdir(parents=True, exist_ok=True)
        env = cold_env(ws.env, cache_dir)
        log_dir = run_dir / "logs" / f"{n:03d}"
        measured = run_measured(argv, timeout=ws.timeout, log_dir=log_dir, env=env)
        check_exit(measured, registry)
        seconds += measured.seconds
        peak = max(peak, measured.peak_rss_mib)
    return Timed(seconds, peak)


def run_once(ws: BatchWorkspace, contender: Contender, round_: int) -> tuple[Run, StoredBlobs]:
    """Push the whole batch once to a fresh registry; check every image; the measurements."""
    with fresh_registry(ws.base, ws.registry_dir) as (run_dir, registry):
        with PREPARE[contender.key](ws, run_dir, registry.host) as commands:
            timed = run_commands(
                commands,
                ws=ws,
                run_dir=run_dir,
                registry=registry,
                cache_per_command=contender.key in UNCACHED,
            )
            verify_pushed(ws, registry.host)
        stored = stored_blobs(registry)
    repositories = f"{ws.images[0].repository}…{ws.images[-1].repository}"
    run = Run(
        round_,
        contender.key,
        repositories,
        timed.seconds,
        timed.peak_rss_mib,
        stored_blobs=stored.count,
        stored_bytes=stored.bytes,
    )
    return run, stored


def verify_pushed(ws: BatchWorkspace, host: str) -> None:
    for image in ws.images:
        target = image.target(host)
        check_pushed(target, image.image_id, LAYER_COUNT, timeout=ws.timeout, env=ws.env)


# --- rounds and the report --------------------------------------------------------------------


def run_rounds(ws: BatchWorkspace, contenders: Sequence[Contender], rounds: int) -> list[Run]:
    """Each round pushes with every contender, in an order rotated per round, so machine noise
    hits all alike."""
    runs: list[Run] = []
    for round_ in range(1, rounds + 1):
        for contender in in_turn(contenders, round_):
            run, stored = run_once(ws, contender, round_)
            runs.append(run)
            say(
                f"round {round_}/{rounds}  {contender.label:<44} {run.seconds:7.2f} s"
                f"  {run.peak_rss_mib:6.0f} MiB  stored {stored.bytes / MIB:6.1f} MiB"
                f" in {stored.count} blobs"
            )
    return runs


def ratios(summaries: Sequence[Summary]) -> dict[str, float]:
    """Each peer loop's median time over Hoist's: how many times faster Hoist was."""
    medians = {s.contender.key: s.median_seconds for s in summaries}
    return {key: medians[key] / medians[HOIST.key] for key in medians if key != HOIST.key}


def verdicts(ws: BatchWorkspace, summaries: Sequence[Summary], docker_skipped: str | None) -> str:
    """The lines under the table: Hoist against each loop, the target, and anything odd."""
    lines = []
    labels = {s.contender.key: s.contender.label for s in summaries}
    for key, ratio in ratios(summaries).items():
        line = f"{labels[key]} took {ratio:.2f}× Hoist's time"
        if key == SKOPEO_ARCHIVE.key:
            met = "met" if ratio >= TARGET_RATIO else "NOT met"
            line += f" (target ≥ {TARGET_RATIO:.0f}×: {met})"
        lines.append(line)
    if docker_skipped is not None:
        lines.append(f"docker push loop: skipped, {docker_skipped}")
    for s in summaries:
        if s.stored_blobs is not None and s.stored_blobs != ws.expected_blobs:
            lines.append(
                f"note: {s.contender.label} left {s.stored_blobs:.0f} blobs in the registry, "
                f"not the {ws.expected_blobs} expected"
            )
    return "\n".join(lines)


def batch_benchmark(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    payload_mib = args.images * IMAGE_MIB
    say(
        f"generating {args.images} images × ({SHARED_LAYERS} shared {SHARED_LAYER_MIB} MiB + "
        f"1 unique {UNIQUE_LAYER_MIB} MiB layers): archives, OCI layout, store, in {base}"
    )
    ws = generate(base, args.images, timeout=args.timeout, registry_dir=args.registry_dir)
    load_at_start = os.getloadavg()[0]
    docker_skipped = docker_unavailable(ws.env)
    contenders = [HOIST, SKOPEO_ARCHIVE, SKOPEO_OCI, SKOPEO_UNCACHED]
    with contextlib.ExitStack() as stack:
        if docker_skipped is None:
            stack.enter_context(docker_loaded(ws))
            contenders.append(DOCKER)
        else:
            say(f"docker push loop skipped: {docker_skipped}")
        runs = run_rounds(ws, contenders, args.runs)
    summaries = summarise(contenders, runs, payload_mib)
    print(
        f"\nCold batch push of {args.images} images, each {SHARED_LAYERS} shared "
        f"{SHARED_LAYER_MIB} MiB layers + 1 unique {UNIQUE_LAYER_MIB} MiB layer of random bytes, "
        f"to a local registry (fresh registry per run, its storage in "
        f"{registry_storage(ws.registry_dir)}), median of {args.runs} runs.\n"
        f"Hoist pushes every ref in one command; the others loop, one command per image, and "
        f"their time is the sum of those commands' wall times. skopeo's blob-info cache starts "
        f"empty in each run and is shared by the loop's commands (4: empty for every command).\n"
        f"MiB/s = {payload_mib} MiB of logical (uncompressed) layer payload / median time. "
        f"vs skopeo = the skopeo docker-archive loop's median time / this median time "
        f"(>1: Hoist is faster). stored MiB, blobs = the registry's blob store afterwards "
        f"({ws.expected_blobs} distinct blobs expected).\n"
    )
    print(table(summaries))
    print()
    print(verdicts(ws, summaries, docker_skipped))
    load_at_end = os.getloadavg()[0]
    print(
        f"machine load (1-minute average) at the first and last run: "
        f"{load_at_start:.1f}, {load_at_end:.1f} on {os.cpu_count()} CPUs"
    )
    return {
        "mode": "batch",
        "settings": {
            "registry_dir": registry_storage(ws.registry_dir),
            "runs": args.runs,
            "images": args.images,
            "shared_layers": SHARED_LAYERS,
            "shared_layer_mib": SHARED_LAYER_MIB,
            "unique_layer_mib": UNIQUE_LAYER_MIB,
        },
        "payload_mib": payload_mib,
        "expected_blobs": ws.expected_blobs,
        "target_ratio": TARGET_RATIO,
        "ratios_vs_hoist": ratios(summaries),
        "docker_skipped": docker_skipped,
        "load_average_1min": {"start": load_at_start, "end": load_at_end},
        "images": [{"repository": i.repository, "image_id": i.image_id} for i in ws.images],
        "runs": [r.to_json() for r in runs],
        "summary": [s.to_json() for s in summaries],
    }


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--images", type=int, default=50, help="images in the batch (default 50)")
    parser.add_argument(
        "--out", type=Path, help="raw runs as JSON (default results/batch-<time>.json)"
    )
    add_run_options(parser, timeout=600)
    args = parser.parse_args(argv)
    args.registry_dir = args.registry_dir or default_registry_dir()
    if min(args.runs, args.images) < 1:
        parser.error("--runs and --images must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure()  # the benchmark owns its process, as the CLI does: warnings only, on stderr
    return run_benchmark("batch", args.work_dir, args.out, partial(batch_benchmark, args)).code


if __name__ == "__main__":
    sys.exit(main())
