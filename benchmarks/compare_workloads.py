"""The comparison's workloads, generated once and untimed: A–E, R and the batch.

Each workload is one or more images, written as an OCI layout with gzip blobs (what the
layout-reading peers push as they are) and, where it has a "store" row, as docker-archives that
``hoist load`` puts into a store of its own and ``docker load`` into dockerd (what the
compressing pushers start from). Everything is deterministic: the same settings give the same
bytes, so the same digests, on every run. R is the exception by design: it is this machine's own
files, so its bytes are this machine's.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import batch
from benchmarks.process import BenchmarkError, hoist_argv, run_checked
from benchmarks.report import MIB, say
from engine.demo.sample import (
    PIECE_SIZE,
    SampleImage,
    add_legacy_image,
    make_config,
    open_tar_for_writing,
    tar_info,
    to_json,
)
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.image.oci_layout import REF_NAME_ANNOTATION
from engine.media_types import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST
from tests.support.sample import ISAL_GZIP, LayerSpec, write_docker_archive, write_oci_layout

KIB = 1 << 10
TAG = "latest"
LAYOUT = "layout"
STORE = "store"
#: The directories R tars, one layer each, in this order.
SYSTEM_DIRS = (Path("/usr/bin"), Path("/usr/lib"), Path("/usr/share"))
#: Every file of the tars R and B write carries this time, so that their bytes do not depend on
#: when they were made.
FIXED_MTIME = 1_700_000_000


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``--quick`` shrinks them all."""

    a_layers: int = 8
    a_mib: int = 32
    b_layers: int = 4
    b_mib: int = 64
    c_layers: int = 200
    c_kib: int = 16
    e_mib: int = 2048
    r_mib: int = 96
    batch_images: int = 50


QUICK = Sizes(a_mib=2, b_mib=4, c_layers=50, e_mib=64, r_mib=8, batch_images=5)


@dataclass(frozen=True)
class Image:
    """One image of a workload: its name in the layout, its repository, what to expect back."""

    ref_name: str
    repository: str
    image_id: str
    layer_count: int
    #: Its docker-archive, where the workload has a store row.
    archive: Path | None = None

    @property
    def source_name(self) -> str:
        """The name the archive carries: ``hoist load`` and ``docker load`` file it under it."""
        return f"{self.repository}:{TAG}"

    def target(self, host: str, prefix: str) -> str:
        """Where a run pushes it: the repository under a prefix of the run's own."""
        return f"{host}/{prefix}/{self.repository}:{TAG}"


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    images: tuple[Image, ...]
    #: Uncompressed layer bytes of all its images (a shared layer counted once per image).
    payload_bytes: int
    layout: Path
    #: Hoist's store holding the images (loaded from the archives), for the store row.
    store: Path | None
    sources: tuple[str, ...]
    #: The timed push is the second: the registry already holds everything.
    noop: bool = False
    #: Many images: Hoist pushes all its refs in one command, the CLIs loop (benchmarks.batch).
    batch: bool = False

    @property
    def payload_mib(self) -> float:
        return self.payload_bytes / MIB

    def layout_bytes(self) -> int:
        """The layout's blobs: what a precompressed push of every image once sends at most."""
        return sum(p.stat().st_size for p in (self.layout / "blobs" / "sha256").iterdir())


# --- layer content ----------------------------------------------------------------------------


def _words(rng: random.Random) -> list[str]:
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    return ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(200)]


def _text_pieces(seed: int, size: int) -> Iterator[bytes]:
    """``size`` bytes of compressible text: lines drawn from a fixed set of 150, each with a
    number that varies. isal's level 1 (the layout's gzip) takes it to about 10.5 %: 4 × 64 MiB
    make the issue's 27 MiB of gzip."""
    rng = random.Random(seed)
    words = _words(rng)
    lines = [" ".join(rng.choices(words, k=rng.randint(4, 14))) for _ in range(150)]
    left = size
    while left > 0:
        chunk = "".join(f"{rng.choice(lines)} {rng.randrange(10)}\n" for _ in range(8000)).encode()
        yield chunk[:left]
        left -= len(chunk[:left])


def write_text_tar(path: Path, seed: int, size: int, files: int = 8) -> None:
    """A layer tar of ``files`` text files, ``size`` bytes of content in all."""
    with open_tar_for_writing(path) as tar:
        for n in range(files):
            part = size // files + (1 if n < size % files else 0)
            data = b"".join(_text_pieces(seed * 1000 + n, part))
            tar.addfile(tar_info(f"text/{seed}/{n:02d}.log", size=len(data)), _Reader(data))


class _Reader:
    """A file-like view of bytes for ``TarFile.addfile``."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        piece = bytes(self._data[self._at : end])
        self._at += len(piece)
        return piece


def write_system_tar(path: Path, root: Path, cap: int) -> int:
    """Tar ``root``'s directories, regular files and symlinks, walked in sorted order with fixed
    times and owners, stopping before the file that would take the content past ``cap`` bytes.
    Unreadable files and special files are left out. Returns the content bytes written."""
    written = 0
    with open_tar_for_writing(path) as tar:
        for entry in _walk(root):
            info = _system_info(entry)
            if info is None:
                continue
            if info.isreg():
                if written + info.size > cap:
                    break
                try:
                    with entry.open("rb") as f:
                        tar.addfile(info, f)
                except OSError:
                    continue
                written += info.size
            else:
                tar.addfile(info)
    return written


def _walk(root: Path) -> Iterator[Path]:
    for current, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(current)
        yield here
        for name in sorted(files):
            yield here / name
        # os.walk lists symlinks to directories among dirs and does not follow them.
        for name in dirs:
            if (here / name).is_symlink():
                yield here / name
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]


def _system_info(path: Path) -> tarfile.TarInfo | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    name = path.as_posix().lstrip("/")
    if stat.S_ISDIR(st.st_mode):
        info = tar_info(f"{name}/", kind=tarfile.DIRTYPE)
    elif stat.S_ISLNK(st.st_mode):
        info = tar_info(name, kind=tarfile.SYMTYPE)
        info.linkname = os.readlink(path)
    elif stat.S_ISREG(st.st_mode) and os.access(path, os.R_OK):
        info = tar_info(name, size=st.st_size)
    else:
        return None
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = FIXED_MTIME
    return info


# --- images from layer tars -------------------------------------------------------------------


def _diff_id(path: Path) -> Digest:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(PIECE_SIZE):
            hasher.update(piece)
    return Digest.from_hash(hasher)


def _gzip_blob(blob_dir: Path, tar_path: Path) -> Descriptor:
    """Compress a layer tar into the layout as Hoist's sample layouts do (isal, its default
    level, mtime 0), so that the blob depends on the tar alone."""
    compressor = ISAL_GZIP.compressobj()
    hasher = hashlib.sha256()
    partial = blob_dir / f".partial-{tar_path.name}"
    size = 0
    with tar_path.open("rb") as src, partial.open("wb") as dst:
        pieces = iter(lambda: src.read(PIECE_SIZE), b"")
        for out in (*map(compressor.compress, pieces), compressor.flush()):
            hasher.update(out)
            dst.write(out)
            size += len(out)
    digest = Digest.from_hash(hasher)
    partial.replace(blob_dir / digest.hex)
    return Descriptor(OCI_LAYER_GZIP, digest, size)


def _write_json_blob(blob_dir: Path, data: bytes, media_type: str) -> Descriptor:
    digest = Digest.of(data)
    (blob_dir / digest.hex).write_bytes(data)
    return Descriptor(media_type, digest, len(data))


def write_tar_layout(layout: Path, tars: Sequence[Path], ref_name: str) -> SampleImage:
    """An OCI layout (created) holding one image of these layer tars, gzip, under ``ref_name``."""
    blob_dir = layout / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    (layout / "oci-layout").write_bytes(to_json({"imageLayoutVersion": "1.0.0"}))
    layers = [_gzip_blob(blob_dir, tar) for tar in tars]
    sample = _sample(tars)
    config = _write_json_blob(blob_dir, sample.config, OCI_CONFIG)
    manifest = to_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
    )
    entry = _write_json_blob(blob_dir, manifest, OCI_MANIFEST)
    entry = replace(entry, annotations={REF_NAME_ANNOTATION: ref_name})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry.to_json()]}
    (layout / "index.json").write_bytes(to_json(index))
    return sample


def _sample(tars: Sequence[Path]) -> SampleImage:
    diff_ids = [_diff_id(tar) for tar in tars]
    config = make_config(diff_ids)
    return SampleImage(Digest.of(config), config, diff_ids, list(tars))


def write_tar_archive(path: Path, tars: Sequence[Path], repo_tag: str) -> SampleImage:
    """A ``docker save`` archive of one image of these layer tars, named ``repo_tag``."""
    sample = _sample(tars)
    with open_tar_for_writing(path) as tar:
        add_legacy_image(tar, sample, [repo_tag])
    return sample


# --- the workloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Generator:
    base: Path
    env: dict[str, str]
    timeout: float
    registry_dir: Path | None

    def load(self, store: Path, images: Sequence[Image]) -> Path:
        for image in images:
            assert image.archive is not None
            load = hoist_argv(store, "load", "-q", "-i", str(image.archive))
            run_checked(load, timeout=self.timeout, env=self.env)
        return store

    def from_specs(
        self, key: str, title: str, specs: Sequence[LayerSpec], sources: tuple[str, ...]
    ) -> Workload:
        """A workload of one image of random layers (``tests.support.sample``)."""
        home = self.base / key
        layout = home / LAYOUT
        sample = write_oci_layout(layout, specs, TAG)
        image = Image(TAG, f"bench/{key.lower()}", str(sample.image_id), len(specs))
        store = None
        if STORE in sources:
            archive = home / "image.tar"
            written = write_docker_archive(archive, specs, [image.source_name], home / "tars")
            shutil.rmtree(home / "tars")
            if written.image_id != sample.image_id:
                raise BenchmarkError(f"{key}: the OCI layout and the docker-archive differ")
            image = replace(image, archive=archive)
            store = self.load(home / STORE, [image])
        payload = sum(spec.size for spec in specs)
        return Workload(key, title, (image,), payload, layout, store, sources)

    def from_tars(
        self, key: str, title: str, tars: Sequence[Path], sources: tuple[str, ...]
    ) -> Workload:
        """A workload of one image of the given layer tars (removed afterwards)."""
        home = self.base / key
        sample = write_tar_layout(home / LAYOUT, tars, TAG)
        image = Image(TAG, f"bench/{key.lower()}", str(sample.image_id), len(tars))
        store = None
        if STORE in sources:
            archive = home / "image.tar"
            write_tar_archive(archive, tars, image.source_name)
            image = replace(image, archive=archive)
            store = self.load(home / STORE, [image])
        payload = sum(tar.stat().st_size for tar in tars)
        for tar in tars:
            tar.unlink()
        return Workload(key, title, (image,), payload, home / LAYOUT, store, sources)

    def tars_dir(self, key: str) -> Path:
        path = self.base / key / "tars"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def batch(self, count: int) -> Workload:
        """``benchmarks.batch``'s images: five shared 4 MiB layers and one of each image's own."""
        home = self.base / "batch"
        home.mkdir(parents=True)
        ws = batch.generate(home, count, timeout=self.timeout, registry_dir=self.registry_dir)
        images = tuple(
            Image(i.ref_name, i.repository, i.image_id, batch.LAYER_COUNT, i.archive)
            for i in ws.images
        )
        title = (
            f"batch: {count} images × ({batch.SHARED_LAYERS} shared {batch.SHARED_LAYER_MIB} MiB"
            f" + 1 own {batch.UNIQUE_LAYER_MIB} MiB), random"
        )
        payload = count * batch.IMAGE_MIB * MIB
        return Workload(
            "batch", title, images, payload, ws.layout, ws.store, (STORE, LAYOUT), batch=True
        )


def generate(keys: Sequence[str], sizes: Sizes, gen: Generator) -> list[Workload]:
    """The selected workloads, in the order asked for; D shares A's files."""
    made: dict[str, Workload] = {}

    def a() -> Workload:
        if "A" not in made:
            specs = [LayerSpec(sizes.a_mib * MIB, seed=n) for n in range(1, sizes.a_layers + 1)]
            title = f"A: {sizes.a_layers} × {sizes.a_mib} MiB random"
            made["A"] = gen.from_specs("A", title, specs, (LAYOUT, STORE))
        return made["A"]

    def b() -> Workload:
        tars = gen.tars_dir("B")
        paths = [tars / f"text-{n}.tar" for n in range(1, sizes.b_layers + 1)]
        for n, path in enumerate(paths, 1):
            write_text_tar(path, n, sizes.b_mib * MIB)
        return gen.from_tars(
            "B", f"B: {sizes.b_layers} × {sizes.b_mib} MiB text", paths, (LAYOUT, STORE)
        )

    def c() -> Workload:
        specs = [LayerSpec(sizes.c_kib * KIB, seed=n) for n in range(1, sizes.c_layers + 1)]
        return gen.from_specs(
            "C", f"C: {sizes.c_layers} × {sizes.c_kib} KiB random", specs, (LAYOUT,)
        )

    def d() -> Workload:
        base = a()
        title = f"D: no-op re-push of A ({sizes.a_layers} × {sizes.a_mib} MiB)"
        return replace(base, key="D", title=title, noop=True)

    def e() -> Workload:
        specs = [LayerSpec(sizes.e_mib * MIB, seed=1)]
        return gen.from_specs("E", f"E: one {sizes.e_mib} MiB random layer", specs, (LAYOUT,))

    def r() -> Workload:
        tars = gen.tars_dir("R")
        paths = []
        for n, root in enumerate(SYSTEM_DIRS, 1):
            path = tars / f"system-{n}.tar"
            write_system_tar(path, root, sizes.r_mib * MIB)
            paths.append(path)
        title = f"R: {', '.join(map(str, SYSTEM_DIRS))} (≤ {sizes.r_mib} MiB each)"
        return gen.from_tars("R", title, paths, (LAYOUT, STORE))

    makers = {"A": a, "B": b, "C": c, "D": d, "E": e, "R": r}
    workloads = []
    for key in keys:
        say(f"generating workload {key} in {gen.base / key}")
        workloads.append(gen.batch(sizes.batch_images) if key == "batch" else makers[key]())
    return workloads


WORKLOADS = ("A", "B", "C", "D", "E", "R", "batch")
