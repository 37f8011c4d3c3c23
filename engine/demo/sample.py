"""Deterministic sample images: the layer tars, config and ``docker save`` archive of the demo.

The same ``LayerSpec`` always gives the same bytes: file contents come from a PRNG seeded with
the spec's seed (so they do not compress, like real binaries) and every tar header has fixed
times, owners and modes. The tests' kit (``tests/support/sample.py``) builds its other shapes
(gzip layers, Docker ≥ 25 archives, OCI layouts and indexes) from these pieces. Everything here
blocks: call it from a worker thread or test setup.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.digest import Digest

#: Layer contents are produced and written in pieces of this size, so memory stays flat.
PIECE_SIZE = 1 << 20
#: A layer's contents are split into files of at most this size.
MAX_FILE_SIZE = 64 << 20
#: 2024-01-01T00:00:00Z: every tar entry carries it, so the bytes never depend on the clock.
SAMPLE_MTIME = 1704067200
SAMPLE_DIR = "hoist-sample"
_BLOCK_SIZE = tarfile.BLOCKSIZE
_END_OF_ARCHIVE = bytes(2 * _BLOCK_SIZE)

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class LayerSpec:
    """A layer of ``size`` bytes of file content drawn from ``seed``; size 0 is an empty tar."""

    size: int
    seed: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"layer size must not be negative, got {self.size}")


@dataclass(frozen=True)
class SampleImage:
    """What was written: the config, its ID, the layers' diff IDs and any uncompressed tars."""

    image_id: Digest
    config: bytes
    diff_ids: list[Digest]
    layer_paths: list[Path]


def tar_info(name: str, *, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    """A tar header with fixed time, owner and mode."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mtime = SAMPLE_MTIME
    info.mode = 0o644 if kind == tarfile.REGTYPE else 0o755
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _file_sizes(total: int) -> list[int]:
    full, rest = divmod(total, MAX_FILE_SIZE)
    return [MAX_FILE_SIZE] * full + ([rest] if rest else [])


def _random_pieces(rng: random.Random, size: int) -> Iterator[bytes]:
    remaining = size
    while remaining > 0:
        piece = min(PIECE_SIZE, remaining)
        yield rng.randbytes(piece)
        remaining -= piece


def iter_layer_tar(spec: LayerSpec) -> Iterator[bytes]:
    """The bytes of the layer tar for ``spec``, in pieces of at most ``PIECE_SIZE``."""
    if spec.size:
        rng = random.Random(spec.seed)
        yield _header(tar_info(f"{SAMPLE_DIR}/", kind=tarfile.DIRTYPE))
        for n, size in enumerate(_file_sizes(spec.size)):
            yield _header(tar_info(f"{SAMPLE_DIR}/{spec.seed}-{n}.bin", size=size))
            yield from _random_pieces(rng, size)
            yield bytes(-size % _BLOCK_SIZE)
    # Like Go's archive/tar (and so Docker), end with two zero blocks and no record padding.
    yield _END_OF_ARCHIVE


def write_layer_tar(path: Path, spec: LayerSpec) -> Digest:
    """Write the layer tar for ``spec`` to ``path``; return its diff ID."""
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        for piece in iter_layer_tar(spec):
            hasher.update(piece)
            f.write(piece)
    return Digest.from_hash(hasher)


def to_json(value: Any) -> bytes:
    """Compact JSON: the one serialisation every sample document uses."""
    return json.dumps(value, separators=(",", ":")).encode()


def make_config(
    diff_ids: Sequence[Digest],
    *,
    created: str = "2024-01-01T00:00:00Z",
    architecture: str = "amd64",
    os: str = "linux",
    variant: str | None = None,
) -> bytes:
    """An image config for layers with these diff IDs, serialised the same way every time."""
    platform = {"architecture": architecture, "os": os}
    if variant:
        platform["variant"] = variant
    return to_json(
        {
            **platform,
            "created": created,
            "config": {"Env": [f"PATH={_PATH}"]},
            "rootfs": {"type": "layers", "diff_ids": [str(d) for d in diff_ids]},
            "history": [
                {"created": created, "created_by": f"hoist sample layer {i}"}
                for i in range(len(diff_ids))
            ],
        }
    )


def write_sample_image(
    work_dir: Path, layers: Sequence[LayerSpec], *, architecture: str = "amd64"
) -> SampleImage:
    """Write the layer tars into ``work_dir`` (created if need be) and make their config."""
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = [work_dir / f"layer-{spec.size}-{spec.seed}.tar" for spec in layers]
    diff_ids = [write_layer_tar(path, spec) for path, spec in zip(paths, layers, strict=True)]
    config = make_config(diff_ids, architecture=architecture)
    return SampleImage(Digest.of(config), config, diff_ids, paths)


def legacy_layer_ids(diff_ids: Sequence[Digest]) -> list[str]:
    """The directory names of the layers in a ``docker save`` archive."""
    # Docker's v1 layer IDs chain each diff ID onto its parent's ID, so a repeated layer
    # still gets its own directory; any stable chain serves a sample.
    ids: list[str] = []
    parent = ""
    for diff_id in diff_ids:
        parent = hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()
        ids.append(parent)
    return ids


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(tar_info(name, size=len(data)), io.BytesIO(data))


def add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    with path.open("rb") as f:
        tar.addfile(tar_info(name, size=path.stat().st_size), f)


def add_dir(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(tar_info(name, kind=tarfile.DIRTYPE))


def open_tar_for_writing(path: Path) -> tarfile.TarFile:
    return tarfile.TarFile(path, "w", format=tarfile.PAX_FORMAT, copybufsize=PIECE_SIZE)


def add_docker_manifest(
    tar: tarfile.TarFile, config_name: str, repo_tags: Sequence[str], layer_names: list[str]
) -> None:
    """``manifest.json``, the index of a ``docker save`` archive."""
    entry = {"Config": config_name, "RepoTags": list(repo_tags), "Layers": layer_names}
    add_bytes(tar, "manifest.json", to_json([entry]))


def add_legacy_image(tar: tarfile.TarFile, sample: SampleImage, repo_tags: Sequence[str]) -> None:
    """The classic ``docker save`` shape: ``<id>.json`` config and ``<layer id>/layer.tar``
    files, each the file at the matching ``sample.layer_paths``."""
    config_name = f"{sample.image_id.hex}.json"
    add_bytes(tar, config_name, sample.config)
    layer_names: list[str] = []
    for layer_id, layer_path in zip(
        legacy_layer_ids(sample.diff_ids), sample.layer_paths, strict=True
    ):
        add_dir(tar, f"{layer_id}/")
        add_file(tar, f"{layer_id}/layer.tar", layer_path)
        layer_names.append(f"{layer_id}/layer.tar")
    add_docker_manifest(tar, config_name, repo_tags, layer_names)


def write_docker_archive(
    path: Path,
    layers: Sequence[LayerSpec],
    repo_tags: Sequence[str],
    work_dir: Path,
    *,
    architecture: str = "amd64",
) -> SampleImage:
    """Write a classic ``docker save`` archive of one image with uncompressed layers; the layer
    tars are kept in ``work_dir``."""
    sample = write_sample_image(work_dir, layers, architecture=architecture)
    with open_tar_for_writing(path) as tar:
        add_legacy_image(tar, sample, repo_tags)
    return sample
