"""The sample images the tests and the benchmarks push besides the demo's: gzip layers made by
isal or by zlib, Docker ≥ 25 archives, OCI layouts, multi-platform indexes and OCI archives.

They are built from the demo's deterministic layers (``engine.demo.sample``), so the same
``LayerSpec`` always gives the same bytes. Several images, and multi-platform indexes of them, may
share one layout. Everything here blocks: call it from a worker thread or test setup.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

from isal import isal_zlib

from engine.demo.sample import (
    PIECE_SIZE,
    LayerSpec,
    SampleImage,
    add_bytes,
    add_dir,
    add_docker_manifest,
    add_file,
    add_legacy_image,
    iter_layer_tar,
    legacy_layer_ids,
    make_config,
    open_tar_for_writing,
    tar_info,
    to_json,
    write_layer_tar,
    write_sample_image,
)
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.image.oci_layout import REF_NAME_ANNOTATION
from engine.media_types import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)

__all__ = [
    "ISAL_GZIP",
    "ZLIB_9_GZIP",
    "DockerArchiveStyle",
    "Gzip",
    "IndexStyle",
    "LayerSpec",
    "OciSampleImage",
    "OciSampleIndex",
    "PlatformSpec",
    "SampleImage",
    "make_config",
    "write_docker_archive",
    "write_layer_tar",
    "write_oci_archive",
    "write_oci_index_layout",
    "write_oci_layout",
]

DockerArchiveStyle = Literal["legacy", "blobs"]
IndexStyle = Literal["oci", "docker"]
#: A child's platform: (os, architecture, variant or None).
PlatformSpec = tuple[str, str, str | None]


@dataclass(frozen=True)
class Gzip:
    """How a sample's gzip layer blobs are made. Hoist compresses with isal at its own level; a
    layout made with another compressor holds blobs of other digests for the same diff IDs, as
    one written by another tool does."""

    library: Literal["isal", "zlib"] = "isal"
    level: int = isal_zlib.ISAL_DEFAULT_COMPRESSION

    def compressobj(self) -> Any:
        # wbits 31: a gzip wrapper whose header has mtime 0: the blob depends on the bytes alone.
        module = isal_zlib if self.library == "isal" else zlib
        return module.compressobj(self.level, module.DEFLATED, 31)


ISAL_GZIP = Gzip()
#: Another tool's gzip: Python's zlib at its best compression.
ZLIB_9_GZIP = Gzip("zlib", 9)


@dataclass(frozen=True)
class OciSampleImage(SampleImage):
    """A sample written into an OCI layout, with the blobs a registry would receive."""

    manifest: bytes
    manifest_digest: Digest
    layer_digests: list[Digest]


@dataclass(frozen=True)
class OciSampleIndex:
    """A multi-platform sample written into an OCI layout: its index and one image per platform."""

    index: bytes
    index_digest: Digest
    media_type: str
    #: Each child as the index lists it (media type, digest, size, platform), in platform order.
    descriptors: list[Descriptor]
    children: list[OciSampleImage]


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tar_info(name, kind=tarfile.SYMTYPE)
    info.linkname = target
    tar.addfile(info)


def write_docker_archive(
    path: Path,
    layers: Sequence[LayerSpec],
    repo_tags: Sequence[str],
    work_dir: Path,
    *,
    style: DockerArchiveStyle = "legacy",
    architecture: str = "amd64",
    gzip: Gzip | None = None,
) -> SampleImage:
    """Write a ``docker save`` archive of one image; the layer tars are kept in ``work_dir``.

    ``legacy``: ``<id>.json`` config and ``<layer id>/layer.tar`` files (gzip-compressed with
    ``gzip``, as ``docker load`` accepts them). ``blobs``: Docker ≥ 25's shape — an OCI layout
    (``oci-layout``, ``index.json``, ``blobs/sha256/``) beside ``manifest.json``, whose layers are
    ``<layer id>/layer.tar`` symlinks into ``blobs/``.
    """
    sample = write_sample_image(work_dir, layers, architecture=architecture)
    with open_tar_for_writing(path) as tar:
        if style == "legacy":
            members = (
                [_gzipped(p, gzip) for p in sample.layer_paths] if gzip else sample.layer_paths
            )
            add_legacy_image(tar, replace(sample, layer_paths=members), repo_tags)
        else:
            _add_blobs_image(tar, sample, repo_tags)
    return sample


def _gzipped(tar_path: Path, gzip: Gzip) -> Path:
    """A gzip copy of a layer tar beside it."""
    compressor = gzip.compressobj()
    out = tar_path.with_name(f"{tar_path.name}.{gzip.library}-{gzip.level}.gz")
    with tar_path.open("rb") as src, out.open("wb") as dst:
        while piece := src.read(PIECE_SIZE):
            dst.write(compressor.compress(piece))
        dst.write(compressor.flush())
    return out


def _add_blobs_image(tar: tarfile.TarFile, sample: SampleImage, repo_tags: Sequence[str]) -> None:
    add_dir(tar, "blobs/")
    add_dir(tar, "blobs/sha256/")
    config_name = f"blobs/sha256/{sample.image_id.hex}"
    add_bytes(tar, config_name, sample.config)
    written: set[Digest] = set()
    for diff_id, layer_path in zip(sample.diff_ids, sample.layer_paths, strict=True):
        if diff_id not in written:
            add_file(tar, f"blobs/sha256/{diff_id.hex}", layer_path)
            written.add(diff_id)
    manifest = _oci_manifest(
        Descriptor(OCI_CONFIG, sample.image_id, len(sample.config)),
        [
            Descriptor(OCI_LAYER, d, p.stat().st_size)
            for d, p in zip(sample.diff_ids, sample.layer_paths, strict=True)
        ],
    )
    manifest_digest = Digest.of(manifest)
    add_bytes(tar, f"blobs/sha256/{manifest_digest.hex}", manifest)
    layer_names: list[str] = []
    for layer_id, diff_id in zip(legacy_layer_ids(sample.diff_ids), sample.diff_ids, strict=True):
        add_dir(tar, f"{layer_id}/")
        _add_symlink(tar, f"{layer_id}/layer.tar", f"../blobs/sha256/{diff_id.hex}")
        layer_names.append(f"{layer_id}/layer.tar")
    annotations = {REF_NAME_ANNOTATION: repo_tags[0]} if repo_tags else None
    descriptor = Descriptor(OCI_MANIFEST, manifest_digest, len(manifest), annotations=annotations)
    add_bytes(tar, "index.json", _oci_index([descriptor]))
    add_bytes(tar, "oci-layout", _LAYOUT_MARKER)
    add_docker_manifest(tar, config_name, repo_tags, layer_names)


_LAYOUT_MARKER = to_json({"imageLayoutVersion": "1.0.0"})


def _oci_manifest(
    config: Descriptor, layers: Sequence[Descriptor], media_type: str = OCI_MANIFEST
) -> bytes:
    return to_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
    )


def _oci_index(manifests: Sequence[Descriptor], media_type: str = OCI_INDEX) -> bytes:
    return to_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [m.to_json() for m in manifests],
        }
    )


class _HashingWriter:
    """Writes to a file while counting and hashing what it wrote."""

    def __init__(self, f: BinaryIO) -> None:
        self._file = f
        self._hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._hasher.update(data)
        self._file.write(data)
        self.size += len(data)

    @property
    def digest(self) -> Digest:
        return Digest.from_hash(self._hasher)


def _write_blob(blob_dir: Path, data: bytes, media_type: str) -> Descriptor:
    digest = Digest.of(data)
    (blob_dir / digest.hex).write_bytes(data)
    return Descriptor(media_type, digest, len(data))


def _write_gzip_layer(
    blob_dir: Path, spec: LayerSpec, tar_path: Path | None, gzip: Gzip | None
) -> tuple[Digest, Descriptor]:
    """Stream the layer through gzip (None: as it is) into a blob; keep the uncompressed tar at
    ``tar_path``."""
    compressor = gzip.compressobj() if gzip is not None else None
    diff_hasher = hashlib.sha256()
    partial = blob_dir / f".partial-{spec.size}-{spec.seed}"
    with contextlib.ExitStack() as stack:
        blob = _HashingWriter(stack.enter_context(partial.open("wb")))
        raw = stack.enter_context(tar_path.open("wb")) if tar_path else None
        for piece in iter_layer_tar(spec):
            diff_hasher.update(piece)
            if raw is not None:
                raw.write(piece)
            blob.write(compressor.compress(piece) if compressor else piece)
        if compressor is not None:
            blob.write(compressor.flush())
    partial.replace(blob_dir / blob.digest.hex)
    media_type = OCI_LAYER_GZIP if gzip is not None else OCI_LAYER
    return Digest.from_hash(diff_hasher), Descriptor(media_type, blob.digest, blob.size)


def _add_to_index(layout_dir: Path, descriptor: Descriptor, ref_name: str) -> None:
    # A new image with an existing ref name replaces the old entry, as `skopeo copy` does.
    path = layout_dir / "index.json"
    index = json.loads(path.read_bytes()) if path.exists() else {"manifests": []}
    manifests = [
        Descriptor.from_json(m)
        for m in index["manifests"]
        if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) != ref_name
    ]
    path.write_bytes(_oci_index([*manifests, descriptor]))


def _prepare_layout(layout_dir: Path) -> Path:
    """Create the layout's marker and blob directory (if need be); return the directory."""
    blob_dir = layout_dir / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (layout_dir / "oci-layout").write_bytes(_LAYOUT_MARKER)
    return blob_dir


def write_oci_layout(
    layout_dir: Path,
    layers: Sequence[LayerSpec],
    ref_name: str = "latest",
    *,
    work_dir: Path | None = None,
    gzip: Gzip | None = ISAL_GZIP,
    architecture: str = "amd64",
) -> OciSampleImage:
    """Add one image with gzip layers (``gzip=None``: uncompressed tars) to the OCI layout at
    ``layout_dir`` (created if need be).

    With ``work_dir``, the uncompressed layer tars are kept there too (``layer_paths``).
    """
    blob_dir = _prepare_layout(layout_dir)
    tar_paths = [work_dir / f"layer-{s.size}-{s.seed}.tar" if work_dir else None for s in layers]
    written = [
        _write_gzip_layer(blob_dir, spec, tar_path, gzip)
        for spec, tar_path in zip(layers, tar_paths, strict=True)
    ]
    diff_ids = [diff_id for diff_id, _ in written]
    config = make_config(diff_ids, architecture=architecture)
    config_descriptor = _write_blob(blob_dir, config, OCI_CONFIG)
    manifest = _oci_manifest(config_descriptor, [d for _, d in written])
    manifest_descriptor = _write_blob(blob_dir, manifest, OCI_MANIFEST)
    annotated = Descriptor(
        OCI_MANIFEST,
        manifest_descriptor.digest,
        manifest_descriptor.size,
        annotations={REF_NAME_ANNOTATION: ref_name},
    )
    _add_to_index(layout_dir, annotated, ref_name)
    return OciSampleImage(
        image_id=config_descriptor.digest,
        config=config,
        diff_ids=diff_ids,
        layer_paths=[p for p in tar_paths if p is not None],
        manifest=manifest,
        manifest_digest=manifest_descriptor.digest,
        layer_digests=[d.digest for _, d in written],
    )


@dataclass(frozen=True)
class _IndexMediaTypes:
    index: str
    manifest: str
    config: str
    layer: str


_INDEX_STYLES: dict[IndexStyle, _IndexMediaTypes] = {
    "oci": _IndexMediaTypes(OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
    "docker": _IndexMediaTypes(
        DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP
    ),
}

#: The gzip blobs written so far by one call, by spec: shared layers are written once.
_LayerBlobs = dict[LayerSpec, tuple[Digest, Descriptor]]


def _per_platform(
    layers: Sequence[LayerSpec] | Sequence[Sequence[LayerSpec]], count: int
) -> list[Sequence[LayerSpec]]:
    """One list of layers per platform, from one list for all or one list each."""
    flat = [spec for spec in layers if isinstance(spec, LayerSpec)]
    if len(flat) == len(layers):
        return [flat] * count
    nested = [specs for specs in layers if not isinstance(specs, LayerSpec)]
    if len(nested) != len(layers) or len(nested) != count:
        raise ValueError(f"give one list of layers for all {count} platforms, or one per platform")
    return nested


def _platform_json(platform: PlatformSpec) -> dict[str, str]:
    os, architecture, variant = platform
    out = {"architecture": architecture, "os": os}
    if variant:
        out["variant"] = variant
    return out


def _layer_blob(
    blob_dir: Path, spec: LayerSpec, written: _LayerBlobs, gzip: Gzip | None
) -> Descriptor:
    if spec not in written:
        written[spec] = _write_gzip_layer(blob_dir, spec, None, gzip)
    return written[spec][1]


def _styled(blob: Descriptor, gzip_media_type: str) -> Descriptor:
    """A gzip layer under the index style's media type; an uncompressed one stays OCI's."""
    return replace(blob, media_type=gzip_media_type) if blob.media_type == OCI_LAYER_GZIP else blob


def _write_child(
    blob_dir: Path,
    platform: PlatformSpec,
    layers: Sequence[LayerSpec],
    media: _IndexMediaTypes,
    written: _LayerBlobs,
    gzip: Gzip | None,
) -> OciSampleImage:
    blobs = [_styled(_layer_blob(blob_dir, s, written, gzip), media.layer) for s in layers]
    diff_ids = [written[spec][0] for spec in layers]
    os, architecture, variant = platform
    config = make_config(diff_ids, os=os, architecture=architecture, variant=variant)
    config_descriptor = _write_blob(blob_dir, config, media.config)
    manifest = _oci_manifest(config_descriptor, blobs, media.manifest)
    manifest_descriptor = _write_blob(blob_dir, manifest, media.manifest)
    return OciSampleImage(
        image_id=config_descriptor.digest,
        config=config,
        diff_ids=diff_ids,
        layer_paths=[],
        manifest=manifest,
        manifest_digest=manifest_descriptor.digest,
        layer_digests=[blob.digest for blob in blobs],
    )


def write_oci_index_layout(
    layout_dir: Path,
    platforms: Sequence[PlatformSpec],
    layers_per_platform: Sequence[LayerSpec] | Sequence[Sequence[LayerSpec]],
    ref_name: str = "latest",
    *,
    style: IndexStyle = "oci",
    gzip: Gzip | None = ISAL_GZIP,
) -> OciSampleIndex:
    """Add a multi-platform image to the OCI layout at ``layout_dir``: one child per platform.

    ``layers_per_platform`` is one list of layers for every child, or one list per platform; a
    spec used twice is one blob, written once. Each child's config names its platform. ``style``
    ``"docker"`` writes a Docker manifest list of schema 2 manifests instead of an OCI index.
    """
    blob_dir = _prepare_layout(layout_dir)
    media = _INDEX_STYLES[style]
    written: _LayerBlobs = {}
    per_platform = _per_platform(layers_per_platform, len(platforms))
    children = [
        _write_child(blob_dir, platform, layers, media, written, gzip)
        for platform, layers in zip(platforms, per_platform, strict=True)
    ]
    descriptors = [
        Descriptor(media.manifest, c.manifest_digest, len(c.manifest), platform=_platform_json(p))
        for c, p in zip(children, platforms, strict=True)
    ]
    index = _oci_index(descriptors, media.index)
    index_descriptor = _write_blob(blob_dir, index, media.index)
    annotations = {REF_NAME_ANNOTATION: ref_name}
    _add_to_index(layout_dir, replace(index_descriptor, annotations=annotations), ref_name)
    return OciSampleIndex(
        index=index,
        index_digest=index_descriptor.digest,
        media_type=media.index,
        descriptors=descriptors,
        children=children,
    )


def write_oci_archive(path: Path, layout_dir: Path) -> None:
    """Tar the OCI layout at ``layout_dir`` into ``path``, entries sorted, metadata fixed."""
    with open_tar_for_writing(path) as tar:
        for entry in sorted(layout_dir.rglob("*")):
            name = entry.relative_to(layout_dir).as_posix()
            if entry.is_dir():
                add_dir(tar, f"{name}/")
            elif entry.is_file() and not entry.name.startswith(".partial-"):
                add_file(tar, name, entry)
