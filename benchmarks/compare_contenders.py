"""The comparison's contenders: how each pushes a workload, as the commands a run times.

A contender pushes from one source: the OCI layout (gzip blobs, sent as they are) or the store
(uncompressed layers the pusher gzips: Hoist's store, the docker-archive for skopeo, dockerd's
image store for ``docker push``). Its untimed preparation (a store copy, tags, curl's plans)
happens in ``plan``, a context manager that undoes outside effects (dockerd's tags) on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.compare_workloads import LAYOUT, STORE, Image, Workload
from benchmarks.peers.layout import read_image
from benchmarks.process import run_checked, skopeo_copy_argv
from benchmarks.report import Contender
from engine import Engine
from tests.support.dockerd import Daemon
from tests.support.hoist_serve import running_hoist_serve

PEERS_DIR = Path(__file__).resolve().parent / "peers"
CURL_DRIVER = PEERS_DIR / "curl_push.sh"


@dataclass(frozen=True)
class Setup:
    """What one run's preparation knows."""

    workload: Workload
    run_dir: Path
    host: str
    #: A path prefix of this run's own for its repositories.
    prefix: str
    env: dict[str, str]
    timeout: float
    venv_python: Path
    #: How to run Hoist: the ``hoist`` command of an install of this checkout.
    hoist: Sequence[str]
    daemon: Daemon | None = None

    def hoist_argv(self, root: Path, *args: str) -> list[str]:
        return [*self.hoist, "--root", str(root), *args]

    def targets(self) -> list[str]:
        return [image.target(self.host, self.prefix) for image in self.workload.images]

    def pairs(self) -> Iterator[tuple[Image, str]]:
        return zip(self.workload.images, self.targets(), strict=True)


@dataclass(frozen=True)
class Plan:
    """The commands of one run: ``first`` (untimed: a no-op workload's first push), then the
    timed ``commands``, each run after the one before."""

    commands: list[list[str]]
    first: list[list[str]] = field(default_factory=list)
    #: The daemon the commands are clients of: measured with them.
    daemon: Daemon | None = None


Planner = Callable[[Setup], AbstractContextManager[Plan]]


@dataclass(frozen=True)
class Peer:
    """A contender: its ``--contenders`` name, its row in the report, its source."""

    name: str
    contender: Contender
    source: str
    plan: Planner
    #: Why it cannot take part at all here (a tool missing), or None.
    unavailable: str | None = None

    def cannot(self, workload: Workload) -> str | None:
        """Why it cannot push ``workload``, or None."""
        if self.unavailable is not None:
            return self.unavailable
        if self.source not in workload.sources:
            return f"{workload.key} is pushed from the {'/'.join(workload.sources)} only"
        if workload.batch and self.contender.key in (HOIST_LAYOUT.key, HOIST_DAEMON_LAYOUT.key):
            return "in the batch Hoist pushes from its store"
        return None


def _noop(setup: Setup, commands: list[list[str]], daemon: Daemon | None = None) -> Plan:
    return Plan(commands, first=commands if setup.workload.noop else [], daemon=daemon)


# --- Hoist ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _hoist_layout(setup: Setup) -> Iterator[Plan]:
    root = setup.run_dir / "store"
    layout = setup.workload.layout
    yield _noop(
        setup,
        [setup.hoist_argv(root, "push", "-q", "--from", str(layout), t) for t in setup.targets()],
    )


async def _tag_all(root: Path, pairs: Iterator[tuple[Image, str]]) -> None:
    # In process: one `hoist tag` per image would add an interpreter start each to the setup.
    async with Engine(root) as engine:
        for image, target in pairs:
            await engine.tag(image.source_name, target)


def _store_copy(setup: Setup) -> Path:
    # A private copy of the store per run: no push metadata ("pushed where") from earlier runs.
    root = setup.run_dir / "store"
    assert setup.workload.store is not None
    shutil.copytree(setup.workload.store, root, symlinks=True)
    asyncio.run(_tag_all(root, setup.pairs()))
    return root


def _hoist_store(*options: str) -> Planner:
    @contextlib.contextmanager
    def plan(setup: Setup) -> Iterator[Plan]:
        root = _store_copy(setup)
        yield _noop(setup, [setup.hoist_argv(root, "push", "-q", *options, *setup.targets())])

    return plan


@contextlib.contextmanager
def _through_daemon(setup: Setup, root: Path, pushes: list[list[str]]) -> Iterator[Plan]:
    """``hoist push -q`` with each of ``pushes`` as its arguments, through a warm ``hoist serve``
    on ``root`` (started untimed, as dockerd is): issue 15's thin CLI."""
    with running_hoist_serve(setup.run_dir / "serve", root, command=setup.hoist) as daemon:
        address = f"unix://{daemon.socket}"
        commands = [setup.hoist_argv(root, "-H", address, "push", "-q", *a) for a in pushes]
        yield _noop(setup, commands, daemon)


@contextlib.contextmanager
def _hoist_daemon_store(setup: Setup) -> Iterator[Plan]:
    # Every image in one command, as in process (the batch: one request, pushed at once).
    with _through_daemon(setup, _store_copy(setup), [setup.targets()]) as plan:
        yield plan


@contextlib.contextmanager
def _hoist_daemon_layout(setup: Setup) -> Iterator[Plan]:
    layout = str(setup.workload.layout)
    pushes = [["--from", layout, target] for target in setup.targets()]  # as in process
    with _through_daemon(setup, setup.run_dir / "store", pushes) as plan:
        yield plan


def zstd_unsupported(hoist: Sequence[str], env: dict[str, str]) -> str | None:
    """Why this checkout's ``hoist push`` cannot compress with zstd, or None."""
    helped = subprocess.run(
        [*hoist, "push", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    if "--compression" not in helped.stdout:
        return "this checkout's hoist push has no --compression option"
    return None


# --- the layout readers -----------------------------------------------------------------------


@contextlib.contextmanager
def _curl(setup: Setup) -> Iterator[Plan]:
    plans = [_curl_plan(setup, n, image, target) for n, (image, target) in enumerate(setup.pairs())]
    push = ["bash", str(CURL_DRIVER), "push", *map(str, plans)]
    head = ["bash", str(CURL_DRIVER), "head", *map(str, plans)]
    yield Plan([head], first=[push]) if setup.workload.noop else Plan([push])


def _curl_plan(setup: Setup, n: int, image: Image, target: str) -> Path:
    """curl's plan for one image (see curl_push.sh), read from the layout here, untimed."""

    layout_image = read_image(setup.workload.layout, image.ref_name)
    host, rest = target.split("/", 1)
    repository, tag = rest.rsplit(":", 1)
    manifest = setup.run_dir / f"manifest-{n}.json"
    manifest.write_bytes(layout_image.manifest)
    lines = [f"http://{host}/v2/{repository} {tag} {layout_image.media_type} {manifest}"]
    lines += [str(blob.path) for blob in layout_image.blobs]
    plan = setup.run_dir / f"curl-{n}.plan"
    plan.write_text("\n".join(lines) + "\n")
    return plan


def _python_driver(script: str) -> Planner:
    @contextlib.contextmanager
    def plan(setup: Setup) -> Iterator[Plan]:
        jobs = [arg for image, t in setup.pairs() for arg in (image.ref_name, t)]
        argv = [str(setup.venv_python), str(PEERS_DIR / script), str(setup.workload.layout)]
        yield _noop(setup, [[*argv, *jobs]])

    return plan


@contextlib.contextmanager
def _skopeo_layout(setup: Setup) -> Iterator[Plan]:
    layout = setup.workload.layout
    yield _noop(
        setup,
        [skopeo_copy_argv(f"oci:{layout}:{image.ref_name}", t) for image, t in setup.pairs()],
    )


# --- the store's peers ------------------------------------------------------------------------


@contextlib.contextmanager
def _skopeo_archive(setup: Setup) -> Iterator[Plan]:
    yield _noop(
        setup,
        [skopeo_copy_argv(f"docker-archive:{image.archive}", t) for image, t in setup.pairs()],
    )


@contextlib.contextmanager
def _docker(setup: Setup) -> Iterator[Plan]:
    # The images were loaded into dockerd once; each run tags them for its registry, untags after.
    daemon = setup.daemon
    assert daemon is not None
    env = daemon.env(setup.env)
    targets = setup.targets()
    for image, target in setup.pairs():
        run_checked(["docker", "tag", image.source_name, target], timeout=setup.timeout, env=env)
    try:
        yield _noop(setup, [["docker", "push", target] for target in targets], daemon)
    finally:
        run_checked(["docker", "rmi", *targets], timeout=setup.timeout, env=env)


# --- all of them ------------------------------------------------------------------------------

HOIST_LAYOUT = Contender("hoist-layout", "hoist push --from layout")
HOIST_STORE = Contender("hoist-store", "hoist push (store, gzip)")
HOIST_DAEMON_LAYOUT = Contender("hoist-daemon-layout", "hoist push --from layout via hoist serve")
HOIST_DAEMON_STORE = Contender("hoist-daemon-store", "hoist push via hoist serve (store)")
HOIST_STORE_ZSTD = Contender("hoist-store-zstd", "hoist push --compression zstd (store)")
#: The contender every other one in its row is compared with, by source.
HOIST_BY_SOURCE = {LAYOUT: HOIST_LAYOUT.key, STORE: HOIST_STORE.key}
HOIST_DAEMON_BY_SOURCE = {LAYOUT: HOIST_DAEMON_LAYOUT.key, STORE: HOIST_DAEMON_STORE.key}


def peers(*, docker_unavailable: str | None, zstd_unavailable: str | None) -> list[Peer]:
    """Every contender, in the order of the report's rows."""
    return [
        Peer("hoist", HOIST_LAYOUT, LAYOUT, _hoist_layout),
        Peer("hoist-daemon", HOIST_DAEMON_LAYOUT, LAYOUT, _hoist_daemon_layout),
        Peer("curl", Contender("curl", "curl ×4 (ceiling)"), LAYOUT, _curl),
        Peer("skopeo", Contender("skopeo-oci", "skopeo copy oci:"), LAYOUT, _skopeo_layout),
        Peer("dxf", Contender("dxf", "python-dxf"), LAYOUT, _python_driver("dxf_push.py")),
        Peer("oras", Contender("oras", "oras-py"), LAYOUT, _python_driver("oras_push.py")),
        Peer(
            "drca",
            Contender("drca", "docker-registry-client-async"),
            LAYOUT,
            _python_driver("drca_push.py"),
        ),
        Peer("hoist", HOIST_STORE, STORE, _hoist_store()),
        Peer("hoist-daemon", HOIST_DAEMON_STORE, STORE, _hoist_daemon_store),
        Peer(
            "hoist-zstd",
            HOIST_STORE_ZSTD,
            STORE,
            _hoist_store("--compression", "zstd"),
            unavailable=zstd_unavailable,
        ),
        Peer(
            "skopeo",
            Contender("skopeo-archive", "skopeo copy docker-archive:"),
            STORE,
            _skopeo_archive,
        ),
        Peer(
            "docker",
            Contender("docker", "docker push (dockerd)"),
            STORE,
            _docker,
            unavailable=docker_unavailable,
        ),
    ]


NAMES = ("hoist", "hoist-daemon", "hoist-zstd", "curl", "skopeo", "dxf", "oras", "drca", "docker")


def select(all_peers: Sequence[Peer], names: Sequence[str]) -> list[Peer]:
    return [peer for peer in all_peers if peer.name in names]
