"""How Hoist compresses a tar: the choices and their checks, the encoder's bytes (deterministic,
decodable, resumable), and the manifest each choice is named in (pure logic and local files)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import anyio
import pytest
import zstandard

from engine import media_types
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import UsageError
from engine.image.base import FileLayer, SourceImage
from engine.push import manifest as manifests
from engine.push.compression import DEFAULT, DEFAULT_LEVELS, LEVELS, Compression
from engine.push.encode import LayerStream
from engine.push.upload import BlobSender
from engine.retry import Attempts
from tests.support.memory_registry import Faults, MemoryRegistry
from tests.support.policies import FAST

ZSTD = Compression("zstd", 3)
#: Compressible and not trivially so, over two read chunks: levels make different bytes of it.
TEXT = b"".join(b"line %d of a layer, %x\n" % (i, i * 7919 % 65521) for i in range(120_000))


def _layer(tmp_path: Path, data: bytes = TEXT) -> FileLayer:
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    return FileLayer(path=path, size=len(data), diff_id=Digest.of(data))


async def _blob(layer: FileLayer, compression: Compression) -> tuple[bytes, Descriptor]:
    stream = LayerStream(layer, compression=compression)
    pieces = [piece async for piece in stream]
    return b"".join(pieces), stream.descriptor()


# --- the choices ---


def test_the_default_is_gzip_at_the_measured_level() -> None:
    assert Compression.of() == DEFAULT == Compression("gzip", DEFAULT_LEVELS["gzip"])
    assert Compression.of("zstd") == Compression("zstd", DEFAULT_LEVELS["zstd"])
    assert DEFAULT.media_type == media_types.DOCKER_LAYER_GZIP and not DEFAULT.oci_only


@pytest.mark.parametrize(
    ("algorithm", "level", "message"),
    [
        ("gzip", 9, "gzip compression level must be 0 to 3, not 9"),
        ("gzip", -1, "gzip compression level must be 0 to 3, not -1"),
        ("zstd", 0, "zstd compression level must be 1 to 19, not 0"),
        ("zstd", 22, "zstd compression level must be 1 to 19, not 22"),
        ("brotli", None, 'unknown compression "brotli": use one of gzip, zstd'),
    ],
)
def test_a_level_the_algorithm_does_not_take_is_refused_in_one_line(
    algorithm: str, level: int | None, message: str
) -> None:
    with pytest.raises(UsageError) as refused:
        Compression.of(algorithm, level)
    assert str(refused.value) == message


def test_every_level_has_a_compressor_name_of_its_own() -> None:
    """The store keeps what each made apart: one name per algorithm and level."""
    names = {Compression(a, level).compressor for a, levels in LEVELS.items() for level in levels}
    assert len(names) == sum(len(levels) for levels in LEVELS.values())
    assert DEFAULT.compressor == "gzip-isal-blocks2-2" and ZSTD.compressor == "zstd-libzstd-3"


# --- the encoder ---


@pytest.mark.anyio
@pytest.mark.parametrize("compression", [DEFAULT, Compression("gzip", 0), ZSTD])
async def test_one_layer_always_gives_the_same_bytes(
    tmp_path: Path, compression: Compression
) -> None:
    layer = await anyio.to_thread.run_sync(_layer, tmp_path)
    first, described = await _blob(layer, compression)
    again, _ = await _blob(layer, compression)
    assert first == again
    assert described == Descriptor(compression.media_type, Digest.of(first), len(first))


@pytest.mark.anyio
async def test_each_blob_decompresses_to_the_tar(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(_layer, tmp_path)
    gzipped, _ = await _blob(layer, DEFAULT)
    zstd, _ = await _blob(layer, ZSTD)
    assert gzip.decompress(gzipped) == TEXT
    assert gzipped[4:8] == b"\0\0\0\0", "no mtime in the gzip header"
    assert zstandard.ZstdDecompressor().decompress(zstd) == TEXT
    assert len(zstd) < len(gzipped) < len(TEXT)


@pytest.mark.anyio
async def test_a_zstd_frame_says_its_content_size(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(_layer, tmp_path)
    zstd, _ = await _blob(layer, ZSTD)
    frame = zstandard.get_frame_parameters(zstd)
    assert frame.content_size == len(TEXT)
    assert frame.dict_id == 0


@pytest.mark.anyio
async def test_an_empty_layer_is_one_small_valid_blob(tmp_path: Path) -> None:
    layer = await anyio.to_thread.run_sync(_layer, tmp_path, b"")
    zstd, _ = await _blob(layer, ZSTD)
    gzipped, _ = await _blob(layer, DEFAULT)
    assert zstandard.ZstdDecompressor().decompress(zstd) == b""
    assert gzip.decompress(gzipped) == b""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("low", "high"),
    [(Compression("gzip", 0), Compression("gzip", 3)), (Compression("zstd", 1), ZSTD)],
)
async def test_levels_make_different_blobs(
    tmp_path: Path, low: Compression, high: Compression
) -> None:
    """Why the store keeps what each level made apart: a digest names one level's bytes."""
    layer = await anyio.to_thread.run_sync(_layer, tmp_path)
    one, _ = await _blob(layer, low)
    other, _ = await _blob(layer, high)
    assert one != other


@pytest.mark.anyio
async def test_a_zstd_upload_broken_mid_body_resumes_with_the_same_bytes(tmp_path: Path) -> None:
    """The registry kept the first part: the rest is made again, deterministically, and sent."""
    layer = await anyio.to_thread.run_sync(_layer, tmp_path)
    expected, _ = await _blob(layer, ZSTD)
    registry = MemoryRegistry(keeps_partial=True, faults=Faults(break_patch=1, break_at=50_000))

    async def wait(delay: float) -> None:
        pass

    sender = BlobSender(registry, "repo", Attempts(FAST), wait)
    with anyio.fail_after(30):
        blob = await sender.send(LayerStream(layer, compression=ZSTD), None, small=False)

    assert registry.blobs[blob.digest] == expected
    assert registry.patches[1][2] == len(expected) - 50_000, "only the rest was sent again"


# --- the manifest ---

CONFIG = b'{"rootfs": {"type": "layers", "diff_ids": []}}'
MADE = Descriptor(media_types.OCI_LAYER_ZSTD, Digest.of(b"zstd blob"), 10)
FOUND = Descriptor(media_types.DOCKER_LAYER_GZIP, Digest.of(b"gzip blob"), 20)


def test_gzip_builds_docker_schema_2() -> None:
    media_type, raw = manifests.build(CONFIG, media_types.DOCKER_CONFIG, [FOUND], DEFAULT)
    assert media_type == media_types.DOCKER_MANIFEST
    assert json.loads(raw)["mediaType"] == media_types.DOCKER_MANIFEST


def test_zstd_builds_an_oci_manifest_naming_docker_blobs_by_their_oci_names() -> None:
    media_type, raw = manifests.build(CONFIG, media_types.DOCKER_CONFIG, [MADE, FOUND], ZSTD)
    document = json.loads(raw)
    assert media_type == document["mediaType"] == media_types.OCI_MANIFEST
    assert document["config"] == {
        "mediaType": media_types.OCI_CONFIG,
        "size": len(CONFIG),
        "digest": str(Digest.of(CONFIG)),
    }
    assert [layer["mediaType"] for layer in document["layers"]] == [
        media_types.OCI_LAYER_ZSTD,
        media_types.OCI_LAYER_GZIP,
    ]
    assert [layer["digest"] for layer in document["layers"]] == [
        str(MADE.digest),
        str(FOUND.digest),
    ]


def _image(manifest: tuple[str, bytes] | None, *layers: FileLayer) -> SourceImage:
    return SourceImage(
        config=CONFIG,
        layers=list(layers),
        config_media_type=media_types.DOCKER_CONFIG,
        manifest=manifest,
    )


def test_zstd_refuses_a_manifest_that_must_stay_schema_2() -> None:
    own = _image((media_types.DOCKER_MANIFEST, b"{}"))
    with pytest.raises(UsageError, match="zstd layers need an OCI image manifest") as refused:
        manifests.check_compression(own, ZSTD)
    assert "\n" not in str(refused.value)
    manifests.check_compression(own, DEFAULT)
    manifests.check_compression(_image((media_types.OCI_MANIFEST, b"{}")), ZSTD)


def test_zstd_refuses_a_docker_foreign_layer() -> None:
    foreign = Descriptor(media_types.DOCKER_FOREIGN_LAYER_GZIP, FOUND.digest, FOUND.size)
    image = _image(None, FileLayer(Path("/nonexistent"), 20, descriptor=foreign))
    with pytest.raises(UsageError, match="foreign layer"):
        manifests.check_compression(image, ZSTD)
    manifests.check_compression(image, DEFAULT)
