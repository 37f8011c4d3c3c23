"""Compression benchmark: bytes and time of each compressor on real files, not random bytes.

``python -m benchmarks.compression [--cap-mib 100] [--zstd-levels 1,3,6,9] [--out FILE]`` tars
this machine's own ``/usr/bin``, ``/usr/lib`` and ``/usr/share`` (each capped, files in sorted
order, so one machine always gives the same tars), then compresses each tar with every
compressor the way a push does (1 MiB chunks through one streaming compressor, one thread) and
prints bytes and time against zlib level 6, the stand-in for the gzip-6 of Go's compress/gzip
that ``docker push`` writes. ``--docker`` also pushes the three tars as one image through a
private dockerd to a registry on loopback and reads back what Docker really wrote, which becomes
the reference, and pushes them with Hoist from its store (gzip, then zstd) beside it. See
README.md, section Compression.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from isal import isal_zlib

from benchmarks.report import MIB, RESULTS, machine, say, write_results

TREES = ("/usr/bin", "/usr/lib", "/usr/share")
#: What a push reads at a time (engine.image.base.CHUNK_SIZE).
CHUNK = 1 << 20
#: Docker's level: Go's compress/gzip DefaultCompression.
REFERENCE = "zlib-6"
#: The name the three tars are loaded under, by dockerd and by Hoist.
IMAGE = "bench/compression:latest"
_GZIP_WBITS = 31


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


@dataclass(frozen=True)
class Codec:
    name: str
    make: Callable[[], _Compressor]


@dataclass(frozen=True)
class Measured:
    codec: str
    tar: str
    tar_bytes: int
    out_bytes: int
    seconds: float


def codecs(zstd_levels: Sequence[int], zlib_ng_levels: Sequence[int]) -> list[Codec]:
    found = [Codec(REFERENCE, lambda: zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS))]
    found += [
        Codec(f"isal-{level}", _isal(level))
        for level in range(isal_zlib.ISAL_BEST_SPEED, isal_zlib.ISAL_BEST_COMPRESSION + 1)
    ]
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        say("zlib-ng not installed (pip install zlib-ng): its levels are left out")
    else:
        found += [Codec(f"zlib-ng-{level}", _zlib_ng(zlib_ng, level)) for level in zlib_ng_levels]
    import zstandard

    found += [Codec(f"zstd-{level}", _zstd(zstandard, level)) for level in zstd_levels]
    return found


def _isal(level: int) -> Callable[[], _Compressor]:
    return lambda: isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP_WBITS)


def _zlib_ng(module: Any, level: int) -> Callable[[], _Compressor]:
    return lambda: module.compressobj(level, module.DEFLATED, _GZIP_WBITS)


def _zstd(module: Any, level: int) -> Callable[[], _Compressor]:
    # One thread, as Hoist makes its frames (Hoist also writes the content size: 4 bytes).
    return lambda: module.ZstdCompressor(level=level, write_content_size=True).compressobj()


def write_tar(tree: str, path: Path, cap: int) -> int:
    """The tree's files in sorted order until ``cap`` bytes of content; the tar's size."""
    total = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for file in _files(Path(tree)):
            try:
                info = tar.gettarinfo(str(file))
                if info.isfile():
                    if total + info.size > cap:
                        continue
                    with file.open("rb") as handle:
                        tar.addfile(info, handle)
                    total += info.size
                elif info.issym() or info.isdir():
                    tar.addfile(info)
            except OSError:
                continue  # unreadable, or gone meanwhile
            if total >= cap * 0.98:
                break
    return path.stat().st_size


def _files(root: Path) -> Iterator[Path]:
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        yield Path(directory)
        for name in sorted(files):
            yield Path(directory) / name


def measure(codec: Codec, tar: Path) -> Measured:
    out = 0
    started = time.perf_counter()
    compressor = codec.make()
    with tar.open("rb") as source:
        while chunk := source.read(CHUNK):
            out += len(compressor.compress(chunk))
    out += len(compressor.flush())
    seconds = time.perf_counter() - started
    return Measured(codec.name, tar.name, tar.stat().st_size, out, seconds)


def pushes(tars: Sequence[Path], work: Path) -> list[Measured]:
    """What ``docker push`` and ``hoist push`` (gzip, then zstd) write of each tar, pushing one
    image of the three layers, each cold (a fresh store, a repository of its own), and the wall
    time of each whole push (reading, compressing, hashing and sending every layer; Hoist's
    start-up too), spread over the layers by their size."""
    from benchmarks.process import (
        byte_compile_hoist,
        child_env,
        fresh_registry,
        hoist_argv,
        read_manifest,
        run_checked,
    )
    from tests.support.dockerd import running_dockerd

    archive = work / "docker-archive.tar"
    _write_docker_archive(archive, tars)
    byte_compile_hoist()
    runs: list[Measured] = []
    with fresh_registry(work) as (run_dir, registry), running_dockerd(run_dir / "d") as dockerd:
        env = child_env(run_dir)

        def measured(name: str, repository: str, push: Callable[[str], object]) -> None:
            target = f"{registry.host}/bench/{repository}:latest"
            started = time.perf_counter()
            push(target)
            seconds = time.perf_counter() - started
            manifest = read_manifest(target, timeout=60, env=env)
            runs.extend(_spread(name, tars, manifest["layers"], seconds))

        dockerd.docker("load", "-i", str(archive))
        for name, flags in (("hoist push", ()), ("hoist push zstd", ("--compression", "zstd"))):
            root = run_dir / name.replace(" ", "-")
            run_checked(hoist_argv(root, "load", "-i", str(archive)), timeout=600, env=env)

            def hoist(target: str, root: Path = root, flags: Sequence[str] = flags) -> None:
                run_checked(hoist_argv(root, "tag", IMAGE, target), timeout=60, env=env)
                run_checked(hoist_argv(root, "push", "-q", *flags, target), timeout=1800, env=env)

            measured(name, name.replace(" ", "-"), hoist)

        def docker(target: str) -> None:
            dockerd.docker("tag", IMAGE, target)
            dockerd.docker("push", target, timeout=1800)

        measured("docker push", "docker", docker)
    return runs


def _spread(
    name: str, tars: Sequence[Path], layers: Sequence[dict[str, Any]], seconds: float
) -> list[Measured]:
    sizes = [tar.stat().st_size for tar in tars]
    return [
        Measured(name, tar.name, size, layer["size"], seconds * size / sum(sizes))
        for tar, size, layer in zip(tars, sizes, layers, strict=True)
    ]


def _write_docker_archive(path: Path, tars: Sequence[Path]) -> None:
    """A ``docker save`` archive of one image whose layers are ``tars``."""
    diff_ids = [f"sha256:{_sha256(tar)}" for tar in tars]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    layers = [f"{diff_id.removeprefix('sha256:')}/layer.tar" for diff_id in diff_ids]
    manifest = [{"Config": config_name, "RepoTags": ["bench/compression:latest"], "Layers": layers}]
    with tarfile.open(path, "w") as archive:
        for name, tar in zip(layers, tars, strict=True):
            archive.add(tar, arcname=name)
        for name, data in ((config_name, config), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def report(runs: Sequence[Measured], reference: str) -> str:
    """One row per codec: all tars together, against the reference."""
    totals: dict[str, tuple[int, int, float]] = {}
    for run in runs:
        raw, out, seconds = totals.get(run.codec, (0, 0, 0.0))
        totals[run.codec] = (raw + run.tar_bytes, out + run.out_bytes, seconds + run.seconds)
    _, ref_out, ref_seconds = totals[reference]
    lines = [
        f"| compressor | MiB out | bytes / {reference} | s | MiB/s in | speed / {reference} |",
        "|---|---|---|---|---|---|",
    ]
    for name, (raw, out, seconds) in totals.items():
        lines.append(
            f"| {name} | {out / MIB:.1f} | {out / ref_out:.3f} | {seconds:.2f} "
            f"| {raw / MIB / seconds:.0f} | {ref_seconds / seconds:.1f}× |"
        )
    tar_mib = next(iter(totals.values()))[0] / MIB
    lines.append(f"\n{tar_mib:.0f} MiB of tars in all. s: one thread compressing, but for a push:")
    lines.append("the wall time of the whole push (compressing, hashing, sending to loopback).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression")
    parser.add_argument("--cap-mib", type=int, default=100, help="file bytes per tree (100)")
    parser.add_argument("--zstd-levels", default="1,3,6,9", help="comma-separated (1,3,6,9)")
    parser.add_argument("--zlib-ng-levels", default="1,2,3,4,5,6", help="(1,2,3,4,5,6)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per codec; the fastest counts")
    parser.add_argument("--work-dir", type=Path, default=None, help="for the tars ($TMPDIR)")
    parser.add_argument("--out", type=Path, default=None, help="the raw runs as JSON")
    parser.add_argument(
        "--docker",
        action="store_true",
        help="docker push and hoist push the tars (a private dockerd, as root)",
    )
    args = parser.parse_args(argv)
    chosen = codecs(_levels(args.zstd_levels), _levels(args.zlib_ng_levels))
    with tempfile.TemporaryDirectory(prefix="hoist-compression-", dir=args.work_dir) as work:
        tars = []
        for tree in TREES:
            path = Path(work) / (tree.strip("/").replace("/", "-") + ".tar")
            size = write_tar(tree, path, args.cap_mib * MIB)
            say(f"{path.name}: {size / MIB:.0f} MiB")
            tars.append(path)
        runs = []
        for codec in chosen:
            for tar in tars:
                best = min(
                    (measure(codec, tar) for _ in range(args.repeat)), key=lambda m: m.seconds
                )
                runs.append(best)
            say(f"{codec.name} done")
        if args.docker:
            runs = pushes(tars, Path(work)) + runs
            say("pushes done")
    print(report(runs, "docker push" if args.docker else REFERENCE))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"compression-{stamp}.json"
    write_results(out, {"machine": machine(), "runs": [asdict(run) for run in runs]})


def _levels(text: str) -> list[int]:
    return [int(level) for level in text.split(",") if level]


if __name__ == "__main__":
    main()
