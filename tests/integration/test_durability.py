"""``kill -9`` at any moment of ``load`` or ``push``: the store still opens, lists and pushes.

The random-moment tests first run their command once, uninterrupted, to learn how long it lasts
on this machine, then start it again and again, each time sending SIGKILL after a delay drawn
(seeded) from its own slice of that duration, so that the kills spread over the whole run. The
delays only choose moments to kill; nothing here asserts how long anything takes. The mid-write
tests do not leave the moment to chance: they watch the store and kill while a write is visibly
under way (a scratch copy, a staged layer), so that there is a leftover for the next start to
remove.

After every kill, the next ``hoist`` start must:

- list the store (``images --format json``: exit 0, one JSON object per line);
- have swept what the killed writer left (no ``.tmp-`` name under the root, nothing in ``tmp/``);
- leave a consistent store on disk: every config hashes to its image ID and has all its layers,
  every committed layer's ``layer.tar`` hashes to its recorded diff ID and size;

and a fresh ``load`` and ``push`` of the image must work, as read back by skopeo: the manifest
digest that Hoist printed, the config, and layers that gunzip to the config's diff IDs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.clients import ROOT, Hoist, Skopeo
from tests.support.registry import LocalRegistry
from tests.support.sample import LayerSpec, SampleImage, write_docker_archive

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
#: Seeds the kill delays: a failure names a moment that the same seed finds again.
SEED = 20_240_917
#: Kills per command.
KILLS = 6
#: Enough bytes that the command spends most of its time on them, not on starting up.
LAYER_COUNT = 4
LAYER_SIZE = 8 * MiB
#: How long a killed process may take to be reaped; not a measured duration.
PATIENCE = 60.0
TMP_PREFIX = ".tmp-"

DIGEST_LINE = re.compile(r"^\S+: digest: (sha256:[0-9a-f]{64}) size: \d+$", re.MULTILINE)


def layers(series: int) -> list[LayerSpec]:
    """Layers no other series shares, so each push really uploads and each load really writes."""
    return [LayerSpec(size=LAYER_SIZE, seed=series * 100 + n) for n in range(LAYER_COUNT)]


def write_archive(path: Path, series: int, ref: str) -> SampleImage:
    """A docker-archive of the series' layers, named ``ref``; the loose layer tars are dropped."""
    work = path.with_name(f"{path.name}.layers")
    image = write_docker_archive(path, layers(series), [ref], work)
    shutil.rmtree(work)
    return image


# --- killing ------------------------------------------------------------------------------------


def command_line(hoist: Hoist, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "--root", str(hoist.root), *args]


def timed(hoist: Hoist, *args: str) -> float:
    """Seconds one uninterrupted run takes (to place the kills, never to judge)."""
    started = time.monotonic()
    hoist(*args)
    return time.monotonic() - started


def kill_delays(duration: float, rng: random.Random) -> list[float]:
    """One delay in each of ``KILLS`` equal slices of [0, duration)."""
    return [duration * (n + rng.random()) / KILLS for n in range(KILLS)]


def start(hoist: Hoist, args: list[str]) -> subprocess.Popen[str]:
    """``hoist ARGS`` running in the background, its stderr kept for the failure message."""
    return subprocess.Popen(
        command_line(hoist, *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **hoist.env},
    )


def run_and_kill(hoist: Hoist, args: list[str], delay: float) -> int:
    """Start ``hoist ARGS``, SIGKILL it after ``delay`` seconds; its exit status.

    -9 when the kill landed; 0 when the command had already finished (a moment after its end).
    """
    process = start(hoist, args)
    time.sleep(delay)
    process.kill()  # a no-op if it has already exited
    _, stderr = process.communicate(timeout=PATIENCE)
    assert process.returncode in (0, -9), f"hoist {args} failed by itself:\n{stderr}"
    return process.returncode


# --- what the next start must find --------------------------------------------------------------


def leftovers(root: Path) -> list[Path]:
    """Temp names of interrupted writes, and anything left in the scratch directory."""
    found = [path for path in root.rglob("*") if path.name.startswith(TMP_PREFIX)]
    scratch = root / "tmp"
    return found + (list(scratch.iterdir()) if scratch.is_dir() else [])


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def chain_ids(diff_ids: list[str]) -> Iterator[str]:
    """Docker's chain IDs, computed here from the spec rather than by the code under test."""
    chain = ""
    for diff_id in diff_ids:
        chain = (
            diff_id
            if not chain
            else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        )
        yield chain


def assert_layers_sound(root: Path) -> None:
    for directory in (root / "layerdb" / "sha256").glob("*"):
        tar = directory / "layer.tar"
        diff_id = (directory / "diff").read_text().strip()
        assert tar.stat().st_size == int((directory / "size").read_text()), directory
        assert sha256_of(tar) == diff_id, f"{tar} does not hash to its diff ID"


def assert_images_sound(root: Path) -> None:
    for config in (root / "imagedb" / "content" / "sha256").glob("*"):
        assert sha256_of(config) == f"sha256:{config.name}", f"{config} is torn"
        diff_ids = json.loads(config.read_bytes())["rootfs"]["diff_ids"]
        for chain_id in chain_ids(diff_ids):
            layer = root / "layerdb" / "sha256" / chain_id.removeprefix("sha256:")
            assert layer.is_dir(), f"image {config.name} appeared before its layer {chain_id}"


def assert_next_start_recovers(hoist: Hoist) -> None:
    """The first start after the kill lists the store and sweeps; what is left is sound."""
    listed = hoist("images", "--format", "json")
    for line in listed.stdout.splitlines():
        row = json.loads(line)
        assert row["ID"].startswith("sha256:"), row
    assert leftovers(hoist.root) == []
    assert_layers_sound(hoist.root)
    assert_images_sound(hoist.root)


def load_and_push(hoist: Hoist, archive: Path, ref: str) -> str:
    """A fresh ``load`` then ``push``; the manifest digest Hoist printed."""
    assert hoist("load", "-i", str(archive)).stdout.strip() == f"Loaded image: {ref}"
    pushed = hoist("push", "--progress", "plain", ref)
    digests = DIGEST_LINE.findall(pushed.stdout)
    assert len(digests) == 1, pushed.stdout
    return str(digests[0])


def assert_read_back(skopeo: Skopeo, ref: str, digest: str, image: SampleImage, into: Path) -> None:
    """skopeo copies the tag out of the registry: Hoist's digest, config and layers."""
    skopeo.copy_to_oci(ref, into)
    index = json.loads((into / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest

    def blob(digest: str) -> bytes:
        return (into / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()

    manifest = json.loads(blob(digest))
    assert manifest["config"]["digest"] == str(image.image_id)
    diff_ids = [
        "sha256:" + hashlib.sha256(gzip.decompress(blob(layer["digest"]))).hexdigest()
        for layer in manifest["layers"]
    ]
    assert diff_ids == [str(d) for d in image.diff_ids]


# --- the tests ----------------------------------------------------------------------------------


def test_kill_9_during_load(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    ref = f"{registry.host}/durable/load:v1"
    plain = tmp_path / "app.tar"
    image = write_archive(plain, 1, ref)
    # Compressed, so a load also decompresses into the store's scratch directory first.
    archive = tmp_path / "app.tar.gz"
    archive.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    duration = timed(Hoist(tmp_path / "measure-root", env=hoist.env), "load", "-i", str(archive))
    outcomes = []

    for n, delay in enumerate(kill_delays(duration, random.Random(SEED))):
        outcomes.append(run_and_kill(hoist, ["load", "-i", str(archive)], delay))

        assert_next_start_recovers(hoist)
        digest = load_and_push(hoist, archive, ref)
        assert_read_back(skopeo, ref, digest, image, tmp_path / f"back-{n}")
        # An empty store again: the next kill interrupts a whole import.
        hoist("rmi", ref)

    assert -9 in outcomes, "every kill came after the load had finished"


def test_kill_9_during_push(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, tmp_path: Path
) -> None:
    measured = f"{registry.host}/durable/push-measure:v1"
    write_archive(tmp_path / "measure.tar", 2, measured)
    hoist("load", "-i", str(tmp_path / "measure.tar"))
    duration = timed(hoist, "push", "--progress", "plain", measured)
    outcomes = []

    for n, delay in enumerate(kill_delays(duration, random.Random(SEED + 1))):
        # A new image each time: a push of layers the registry already has would upload nothing.
        ref = f"{registry.host}/durable/push-{n}:v1"
        archive = tmp_path / f"push-{n}.tar"
        image = write_archive(archive, 10 + n, ref)
        hoist("load", "-i", str(archive))
        outcomes.append(run_and_kill(hoist, ["push", "--progress", "plain", ref], delay))

        assert_next_start_recovers(hoist)
        digest = load_and_push(hoist, archive, ref)
        assert_read_back(skopeo, ref, digest, image, tmp_path / f"back-{n}")

    assert -9 in outcomes, "every kill came after the push had finished"


#: Moments of a load at which a write is under way, as seen from outside: each leaves a temp file.
MID_WRITE = {
    "decompressing-the-archive": lambda root: any((root / "tmp").glob("*")),
    "staging-a-layer": lambda root: any((root / "layerdb" / "sha256").glob(TMP_PREFIX + "*")),
}
#: Attempts at catching a moment; a write may finish between being seen and being stopped.
CATCH_ATTEMPTS = 3


def stop_mid_write(hoist: Hoist, args: list[str], moment: Callable[[Path], bool]) -> list[Path]:
    """Run ``hoist ARGS`` until ``moment`` holds for its root, freeze it (SIGSTOP), note the
    leftovers a crash would leave, then SIGKILL it. The leftovers, or [] if the moment passed."""
    process = start(hoist, args)
    while process.poll() is None and not moment(hoist.root):
        time.sleep(0.001)
    if process.poll() is None:
        process.send_signal(signal.SIGSTOP)
    frozen = leftovers(hoist.root) if process.poll() is None else []
    process.kill()
    _, stderr = process.communicate(timeout=PATIENCE)
    assert process.returncode in (0, -9), f"hoist {args} failed by itself:\n{stderr}"
    return frozen


@pytest.mark.parametrize("moment", MID_WRITE.values(), ids=MID_WRITE.keys())
def test_kill_9_mid_write_leaves_what_the_next_start_removes(
    hoist: Hoist, tmp_path: Path, moment: Callable[[Path], bool]
) -> None:
    ref = "example.com/durable/mid-write:v1"
    plain = tmp_path / "app.tar"
    write_docker_archive(plain, [LayerSpec(size=48 * MiB, seed=900)], [ref], tmp_path / "work")
    archive = tmp_path / "app.tar.gz"
    archive.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))

    for _ in range(CATCH_ATTEMPTS):
        left = stop_mid_write(hoist, ["load", "-i", str(archive)], moment)
        if left:
            break
        hoist("rmi", ref, check=False)
    assert left, "never caught the load in the middle of that write"

    assert_next_start_recovers(hoist)
    assert all(not path.exists() for path in left)
    assert hoist("load", "-i", str(archive)).stdout.strip() == f"Loaded image: {ref}"
    assert_layers_sound(hoist.root)
