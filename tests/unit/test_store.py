"""The local store: Docker's layout on disk, imports verified, rmi semantics, and concurrency."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from isal import igzip

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import (
    DigestMismatchError,
    ImageNotFoundError,
    ImageSourceError,
    InvalidReferenceError,
    StoreError,
)
from engine.image.base import FileLayer, Layer, SourceImage
from engine.media_types import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
)
from engine.reference import Reference, parse_normalized_named
from engine.store import (
    MAX_METADATA,
    MetadataUpdate,
    Store,
    V2Metadata,
    chain_ids,
    check_hmac,
    compute_hmac,
    default_root,
    metadata,
)
from engine.store.ingest import MAX_INFLATE, _Gunzip
from engine.store.layout import Layout

#: The compressor name a push would pass; these tests read and write its records.
COMPRESSOR = "gzip-test"

# -- building images in the test --------------------------------------------------------------


def make_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sha256(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def config_for(tars: list[bytes], created: str = "2024-01-01T00:00:00Z", **extra: str) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
        **extra,
    }
    return json.dumps(config).encode()


class Builder:
    """Writes layer blobs into a scratch directory and assembles ``SourceImage``s over them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def blob(self, data: bytes) -> Path:
        self.count += 1
        path = self.directory / f"blob-{self.count}"
        path.write_bytes(data)
        return path

    def plain(self, tar: bytes) -> FileLayer:
        return FileLayer(path=self.blob(tar), size=len(tar), diff_id=sha256(tar))

    def gzipped(self, tar: bytes, media_type: str = DOCKER_LAYER_GZIP) -> FileLayer:
        blob = igzip.compress(tar)
        descriptor = Descriptor(media_type, sha256(blob), len(blob))
        return FileLayer(path=self.blob(blob), size=len(blob), descriptor=descriptor)

    def image(self, tars: list[bytes], config: bytes | None = None) -> SourceImage:
        return SourceImage(
            config=config if config is not None else config_for(tars),
            layers=[self.plain(t) for t in tars],
            config_media_type=DOCKER_CONFIG,
        )


@pytest.fixture
def builder(tmp_path: Path) -> Builder:
    directory = tmp_path / "blobs"
    directory.mkdir()
    return Builder(directory)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "root")


BASE = make_tar({"etc/os-release": b"ID=test\n"})
APP = make_tar({"app/main": b"print('hello')\n" * 100})
TOOLS = make_tar({"usr/bin/tool": os.urandom(5000)})


def layer_dirs(store: Store) -> list[str]:
    layerdb = store.root / "layerdb" / "sha256"
    return sorted(p.name for p in layerdb.iterdir()) if layerdb.exists() else []


def image_files(store: Store) -> list[str]:
    imagedb = store.root / "imagedb" / "content" / "sha256"
    return sorted(p.name for p in imagedb.iterdir()) if imagedb.exists() else []


async def read_all(layer: Layer) -> bytes:
    return b"".join([chunk async for chunk in layer.open()])


def ref(text: str) -> Reference:
    return parse_normalized_named(text)


async def stored_image(store: Store, image_id: Digest) -> SourceImage:
    """The stored image ``image_id`` as a push reads it."""
    image, _ = await store.image_to_push(str(image_id), COMPRESSOR)
    return image


# -- round trip and layout --------------------------------------------------------------------


@pytest.mark.anyio
async def test_round_trip_add_tag_resolve_and_stream_back(store: Store, builder: Builder) -> None:
    source = builder.image([BASE, APP])
    image_id = await store.add_image(source)
    assert image_id == sha256(source.config)
    await store.tag(ref("app"), image_id)

    for text in ["app", "app:latest", "docker.io/library/app:latest", str(image_id)]:
        assert await store.resolve(text) == image_id
    stored = await stored_image(store, image_id)
    assert stored.config == source.config
    assert stored.config_media_type == DOCKER_CONFIG
    assert stored.names == ("app:latest",)
    assert [layer.diff_id for layer in stored.layers] == [sha256(BASE), sha256(APP)]
    assert [layer.descriptor for layer in stored.layers] == [None, None]
    assert [await read_all(layer) for layer in stored.layers] == [BASE, APP]
    assert [layer.size for layer in stored.layers] == [len(BASE), len(APP)]


@pytest.mark.anyio
async def test_config_bytes_are_kept_exactly(store: Store, builder: Builder) -> None:
    # Odd spacing and key order: re-serialising would change the image ID.
    config = b'{"rootfs":  {"diff_ids": ["%s"], "type": "layers"},"os":"linux"}' % (
        sha256(BASE).encode()
    )
    image_id = await store.add_image(builder.image([BASE], config=config))
    path = store.root / "imagedb" / "content" / "sha256" / image_id.hex
    assert path.read_bytes() == config
    assert image_id == sha256(config)


def test_chain_ids_follow_the_formula() -> None:
    d0, d1, d2 = sha256(BASE), sha256(APP), sha256(TOOLS)
    c1 = "sha256:" + hashlib.sha256(f"{d0} {d1}".encode()).hexdigest()
    c2 = "sha256:" + hashlib.sha256(f"{c1} {d2}".encode()).hexdigest()
    assert chain_ids([d0, d1, d2]) == [d0, c1, c2]
    assert chain_ids([]) == []


@pytest.mark.anyio
async def test_layerdb_directories_hold_docker_files(store: Store, builder: Builder) -> None:
    await store.add_image(builder.image([BASE, APP]))
    d0, d1 = sha256(BASE), sha256(APP)
    c1 = "sha256:" + hashlib.sha256(f"{d0} {d1}".encode()).hexdigest()
    layerdb = store.root / "layerdb" / "sha256"
    assert layer_dirs(store) == sorted([d0.removeprefix("sha256:"), c1.removeprefix("sha256:")])

    base = layerdb / d0.removeprefix("sha256:")
    assert (base / "diff").read_text() == d0
    assert (base / "size").read_text() == str(len(BASE))
    assert not (base / "parent").exists()
    assert (base / "layer.tar").read_bytes() == BASE

    top = layerdb / c1.removeprefix("sha256:")
    assert (top / "diff").read_text() == d1
    assert (top / "parent").read_text() == d0
    assert (top / "layer.tar").read_bytes() == APP


@pytest.mark.anyio
async def test_repositories_json_has_dockers_shape(store: Store, builder: Builder) -> None:
    image_id = await store.add_image(builder.image([BASE]))
    await store.tag(ref("busybox"), image_id)
    await store.tag(ref("localhost:5000/a/b:v1"), image_id)
    await store.tag(ref("user/app:2"), image_id)

    on_disk = json.loads((store.root / "repositories.json").read_text())
    assert on_disk == {
        "Repositories": {
            "busybox": {"busybox:latest": image_id},
            "localhost:5000/a/b": {"localhost:5000/a/b:v1": image_id},
            "user/app": {"user/app:2": image_id},
        }
    }


@pytest.mark.anyio
async def test_tag_replaces_and_refuses_what_docker_refuses(store: Store, builder: Builder) -> None:
    first = await store.add_image(builder.image([BASE]))
    second = await store.add_image(builder.image([APP]))
    await store.tag(ref("app:1"), first)
    await store.tag(ref("app:1"), second)
    assert await store.resolve("app:1") == second

    with pytest.raises(ImageNotFoundError):
        await store.tag(ref("app:2"), sha256(b"no such config"))
    with pytest.raises(InvalidReferenceError):
        await store.tag(ref(f"app@{first}"), first)
    with pytest.raises(InvalidReferenceError):
        await store.tag(ref("sha256:abc"), first)


@pytest.mark.anyio
async def test_a_store_reads_tags_another_writer_changed(store: Store, builder: Builder) -> None:
    # The store keeps repositories.json parsed between reads; another process's tag or untag
    # (a second Store on the same root) must still be seen at once.
    image_id = await store.add_image(builder.image([BASE]))
    await store.tag(ref("app:1"), image_id)
    assert await store.resolve("app:1") == image_id
    other = Store(store.root)
    await other.tag(ref("app:2"), image_id)
    assert await store.resolve("app:2") == image_id
    assert await other.remove("app:1") == ["Untagged: app:1"]
    with pytest.raises(ImageNotFoundError):
        await store.resolve("app:1")
    await store.tag(ref("app:3"), image_id)  # its own writes too
    assert await other.resolve("app:3") == await store.resolve("app:3") == image_id
    # A retag to another image leaves the file as long as it was: still read anew.
    second = await store.add_image(builder.image([APP]))
    await other.tag(ref("app:3"), second)
    assert await store.resolve("app:3") == second


# -- verification on import -------------------------------------------------------------------


@pytest.mark.anyio
async def test_shared_layers_are_stored_once(store: Store, builder: Builder) -> None:
    await store.add_image(builder.image([BASE, APP]))
    # The second image's base layer points at a file that does not exist: it must not be read.
    missing_base = FileLayer(path=builder.directory / "gone", size=len(BASE), diff_id=sha256(BASE))
    second = SourceImage(
        config=config_for([BASE, TOOLS]),
        layers=[missing_base, builder.plain(TOOLS)],
        config_media_type=DOCKER_CONFIG,
    )
    await store.add_image(second)
    assert len(layer_dirs(store)) == 3
    assert len(image_files(store)) == 2


@pytest.mark.anyio
async def test_diff_id_mismatch_keeps_nothing(store: Store, builder: Builder) -> None:
    wrong = SourceImage(
        config=config_for([APP]),
        layers=[builder.plain(BASE)],
        config_media_type=DOCKER_CONFIG,
    )
    with pytest.raises(DigestMismatchError) as caught:
        await store.add_image(wrong)
    assert caught.value.expected == sha256(APP)
    assert caught.value.actual == sha256(BASE)
    assert layer_dirs(store) == []
    assert image_files(store) == []


@pytest.mark.anyio
async def test_failed_import_rolls_back_its_earlier_layers(store: Store, builder: Builder) -> None:
    # Layer 1 is fine and gets stored; layer 2 lies about its diff ID.
    wrong = SourceImage(
        config=config_for([BASE, APP]),
        layers=[builder.plain(BASE), builder.plain(TOOLS)],
        config_media_type=DOCKER_CONFIG,
    )
    with pytest.raises(DigestMismatchError):
        await store.add_image(wrong)
    assert layer_dirs(store) == []
    assert image_files(store) == []


@pytest.mark.anyio
async def test_failed_import_keeps_layers_other_images_use(store: Store, builder: Builder) -> None:
    await store.add_image(builder.image([BASE]))
    wrong = SourceImage(
        config=config_for([BASE, APP]),
        layers=[builder.plain(BASE), builder.plain(TOOLS)],
        config_media_type=DOCKER_CONFIG,
    )
    with pytest.raises(DigestMismatchError):
        await store.add_image(wrong)
    assert layer_dirs(store) == [sha256(BASE).hex]


@pytest.mark.anyio
async def test_layer_count_must_match_diff_ids(store: Store, builder: Builder) -> None:
    short = SourceImage(
        config=config_for([BASE, APP]), layers=[builder.plain(BASE)], config_media_type=""
    )
    with pytest.raises(ImageSourceError, match="1 layers but its config lists 2"):
        await store.add_image(short)
    assert layer_dirs(store) == []


@pytest.mark.anyio
@pytest.mark.parametrize("media_type", [DOCKER_LAYER_GZIP, OCI_LAYER_GZIP])
async def test_gzip_layer_is_decompressed_and_verified(
    store: Store, builder: Builder, media_type: str
) -> None:
    source = SourceImage(
        config=config_for([BASE, APP]),
        layers=[builder.gzipped(BASE, media_type), builder.gzipped(APP, media_type)],
        config_media_type=DOCKER_CONFIG,
    )
    image_id = await store.add_image(source)
    stored = await stored_image(store, image_id)
    assert [await read_all(layer) for layer in stored.layers] == [BASE, APP]
    assert [layer.diff_id for layer in stored.layers] == [sha256(BASE), sha256(APP)]


@pytest.mark.anyio
async def test_concatenated_gzip_members_are_one_stream(store: Store, builder: Builder) -> None:
    # Parallel compressors emit one member per block; Go's reader (and Docker) accept that.
    half = len(APP) // 2
    blob = igzip.compress(APP[:half]) + igzip.compress(APP[half:])
    layer = FileLayer(
        path=builder.blob(blob),
        size=len(blob),
        descriptor=Descriptor(DOCKER_LAYER_GZIP, sha256(blob), len(blob)),
    )
    source = SourceImage(config=config_for([APP]), layers=[layer], config_media_type="")
    stored = await stored_image(store, await store.add_image(source))
    assert await read_all(stored.layers[0]) == APP


@pytest.mark.anyio
async def test_uncompressed_descriptor_is_checked_too(store: Store, builder: Builder) -> None:
    blob = builder.blob(BASE)
    wrong = Descriptor(DOCKER_LAYER, sha256(APP), len(BASE))
    layer = FileLayer(path=blob, size=len(BASE), descriptor=wrong)
    source = SourceImage(config=config_for([BASE]), layers=[layer], config_media_type="")
    with pytest.raises(DigestMismatchError):
        await store.add_image(source)
    right = FileLayer(
        path=blob, size=len(BASE), descriptor=Descriptor(DOCKER_LAYER, sha256(BASE), len(BASE))
    )
    ok = SourceImage(config=config_for([BASE]), layers=[right], config_media_type="")
    assert await store.add_image(ok) == sha256(ok.config)


@pytest.mark.anyio
async def test_wrong_compressed_digest_raises(store: Store, builder: Builder) -> None:
    good = builder.gzipped(APP)
    assert good.descriptor is not None
    lying = FileLayer(
        path=good.path,
        size=good.size,
        descriptor=Descriptor(DOCKER_LAYER_GZIP, sha256(b"other"), good.descriptor.size),
    )
    source = SourceImage(config=config_for([APP]), layers=[lying], config_media_type="")
    with pytest.raises(DigestMismatchError) as caught:
        await store.add_image(source)
    assert caught.value.actual == good.descriptor.digest
    assert layer_dirs(store) == []
    assert image_files(store) == []


@pytest.mark.anyio
async def test_truncated_gzip_raises(store: Store, builder: Builder) -> None:
    blob = igzip.compress(TOOLS)[:-20]
    layer = FileLayer(
        path=builder.blob(blob),
        size=len(blob),
        descriptor=Descriptor(DOCKER_LAYER_GZIP, sha256(blob), len(blob)),
    )
    source = SourceImage(config=config_for([TOOLS]), layers=[layer], config_media_type="")
    with pytest.raises(ImageSourceError, match="gzip"):
        await store.add_image(source)
    assert layer_dirs(store) == []


@pytest.mark.anyio
async def test_zstd_layer_is_unsupported(store: Store, builder: Builder) -> None:
    layer = FileLayer(
        path=builder.blob(b"zstd bytes"),
        size=10,
        descriptor=Descriptor(OCI_LAYER_ZSTD, sha256(b"zstd bytes"), 10),
    )
    source = SourceImage(config=config_for([BASE]), layers=[layer], config_media_type="")
    with pytest.raises(ImageSourceError, match="unsupported layer media type"):
        await store.add_image(source)
    assert layer_dirs(store) == []


@dataclass(frozen=True)
class BrokenLayer:
    """A source whose stream fails half-way, as a vanished file or a dropped download does."""

    good: bytes
    diff_id: Digest | None = None
    descriptor: Descriptor | None = None

    @property
    def size(self) -> int:
        return len(self.good) * 2

    async def _stream(self) -> AsyncIterator[bytes]:
        yield self.good
        raise OSError("connection reset")

    def open(self, offset: int = 0) -> AsyncIterator[bytes]:
        return self._stream()


@pytest.mark.anyio
async def test_a_failing_source_leaves_no_temp_directory(store: Store) -> None:
    source = SourceImage(
        config=config_for([APP]), layers=[BrokenLayer(APP[:100])], config_media_type=""
    )
    with pytest.raises(ImageSourceError, match="connection reset"):
        await store.add_image(source)
    assert layer_dirs(store) == []


def test_gunzip_output_is_bounded_per_step() -> None:
    # 16 MiB of zeros compress to a few KiB: one feed must not inflate them in one piece.
    blob = igzip.compress(bytes(16 << 20))
    gunzip = _Gunzip()
    sizes = [len(piece) for piece in gunzip.feed(blob)]
    gunzip.finish()
    assert sum(sizes) == 16 << 20
    assert max(sizes) <= MAX_INFLATE


# -- finding ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_resolve_by_short_id_prefix(store: Store, builder: Builder) -> None:
    # Find two configs whose IDs share their first hex digit, to see ambiguity refused.
    ids: dict[str, Digest] = {}
    for n in range(200):
        image_id = await store.add_image(builder.image([BASE], config_for([BASE], label=str(n))))
        if image_id.hex[0] in ids:
            other = ids[image_id.hex[0]]
            break
        ids[image_id.hex[0]] = image_id
    else:
        pytest.fail("no two of 200 IDs share a first digit")

    with pytest.raises(ImageNotFoundError, match="No such image"):
        await store.resolve(image_id.hex[0])
    shared = next(i for i, (a, b) in enumerate(zip(image_id.hex, other.hex, strict=True)) if a != b)
    unique = image_id.hex[: shared + 1]
    assert await store.resolve(unique) == image_id
    assert await store.resolve("sha256:" + unique) == image_id
    assert await store.resolve(other.hex[: shared + 1]) == other
    assert await store.resolve(image_id.hex) == image_id


@pytest.mark.anyio
async def test_resolve_unknown_raises_no_such_image(store: Store, builder: Builder) -> None:
    await store.add_image(builder.image([BASE]))
    for text in ["nope", "nope:1", "localhost:5000/x", "ffffffffffff", "f" * 64, "sha256:ff"]:
        with pytest.raises(ImageNotFoundError, match=f"No such image: {text}"):
            await store.resolve(text)
    # As Docker answers: neither a reference nor an ID is a malformed reference.
    with pytest.raises(InvalidReferenceError, match="lowercase"):
        await store.resolve("NOPE")


@pytest.mark.anyio
async def test_references_by_name_lists_every_tag_of_the_repository(
    store: Store, builder: Builder
) -> None:
    first = await store.add_image(builder.image([BASE]))
    second = await store.add_image(builder.image([APP]))
    await store.tag(ref("app:2"), second)
    await store.tag(ref("app:1"), first)
    await store.tag(ref("other:1"), first)
    found = await store.references_by_name(ref("docker.io/library/app"))
    assert [(str(r), i) for r, i in found] == [
        ("docker.io/library/app:1", first),
        ("docker.io/library/app:2", second),
    ]
    assert await store.references_by_name(ref("nothing")) == []


@pytest.mark.anyio
async def test_images_one_row_per_tag_newest_first(store: Store, builder: Builder) -> None:
    old = await store.add_image(
        builder.image([BASE], config_for([BASE], created="2020-05-01T10:00:00.123456789Z"))
    )
    new = await store.add_image(
        builder.image([BASE, APP], config_for([BASE, APP], created="2023-05-01T12:00:00+02:00"))
    )
    untagged = await store.add_image(
        builder.image([TOOLS], config_for([TOOLS], created="2021-01-01T00:00:00Z"))
    )
    await store.tag(ref("old:1"), old)
    await store.tag(ref("localhost:5000/new:b"), new)
    await store.tag(ref("localhost:5000/new:a"), new)

    rows = [(r.repository, r.tag, r.image_id, r.size) for r in await store.images()]
    assert rows == [
        ("localhost:5000/new", "a", new, len(BASE) + len(APP)),
        ("localhost:5000/new", "b", new, len(BASE) + len(APP)),
        ("<none>", "<none>", untagged, len(TOOLS)),
        ("old", "1", old, len(BASE)),
    ]
    assert (await store.images())[-1].created == "2020-05-01T10:00:00.123456789Z"


# -- removing ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rmi_untags_then_deletes_unused_layers(store: Store, builder: Builder) -> None:
    app = await store.add_image(builder.image([BASE, APP]))
    tools = await store.add_image(builder.image([BASE, TOOLS]))
    await store.tag(ref("app:1"), app)
    await store.tag(ref("app:2"), app)
    await store.tag(ref("tools"), tools)
    app_top = chain_ids([sha256(BASE), sha256(APP)])[1]

    assert await store.remove("app:1") == ["Untagged: app:1"]
    assert await store.resolve("app:2") == app

    assert await store.remove("app:2") == [
        "Untagged: app:2",
        f"Deleted: {app}",
        f"Deleted: {app_top}",
    ]
    assert image_files(store) == [tools.hex]
    assert sha256(BASE).hex in layer_dirs(store)
    stored = await stored_image(store, tools)
    assert [await read_all(layer) for layer in stored.layers] == [BASE, TOOLS]
    with pytest.raises(ImageNotFoundError):
        await store.resolve("app:2")

    tools_top = chain_ids([sha256(BASE), sha256(TOOLS)])[1]
    assert await store.remove(tools.hex[:12]) == [
        "Untagged: tools:latest",
        f"Deleted: {tools}",
        f"Deleted: {tools_top}",
        f"Deleted: {sha256(BASE)}",
    ]
    assert layer_dirs(store) == []
    assert json.loads((store.root / "repositories.json").read_text()) == {"Repositories": {}}


@pytest.mark.anyio
async def test_rmi_by_id_with_several_tags_needs_force(store: Store, builder: Builder) -> None:
    image_id = await store.add_image(builder.image([BASE]))
    await store.tag(ref("one:1"), image_id)
    await store.tag(ref("two:1"), image_id)
    with pytest.raises(StoreError, match=r"conflict: unable to delete .* \(must be forced\)"):
        await store.remove(str(image_id))
    assert await store.resolve("one:1") == image_id

    assert await store.remove(str(image_id), force=True) == [
        "Untagged: one:1",
        "Untagged: two:1",
        f"Deleted: {image_id}",
        f"Deleted: {sha256(BASE)}",
    ]


@pytest.mark.anyio
async def test_rmi_of_an_untagged_image(store: Store, builder: Builder) -> None:
    image_id = await store.add_image(builder.image([BASE]))
    assert await store.remove(image_id.hex[:6]) == [
        f"Deleted: {image_id}",
        f"Deleted: {sha256(BASE)}",
    ]
    with pytest.raises(ImageNotFoundError):
        await store.remove(image_id.hex[:6])


# -- distribution metadata --------------------------------------------------------------------


async def pushed_to(store: Store, diff_id: Digest) -> list[V2Metadata]:
    """Where the store says the layer ``diff_id`` was pushed, as a push reads it."""
    return (await store.layer_metadata([diff_id], COMPRESSOR))[diff_id].metadata


async def record_push(store: Store, diff_id: Digest, entry: V2Metadata) -> None:
    """``entry`` recorded as a push records it."""
    await store.record_pushes([MetadataUpdate(diff_id, entry)], COMPRESSOR)


async def diff_id_of(store: Store, digest: Digest) -> Digest | None:
    """The layer a compressed ``digest`` was recorded for (what forgetting a location reads)."""
    layout = Layout(store.root)
    return await anyio.to_thread.run_sync(metadata.read_diff_id_by_digest, layout, digest)


def entry(n: int, repository: str = "docker.io/library/app", hmac: str = "") -> V2Metadata:
    return V2Metadata(sha256(f"blob {n}".encode()), repository, hmac)


@pytest.mark.anyio
async def test_metadata_is_capped_and_deduplicated(store: Store) -> None:
    diff_id = sha256(APP)
    assert await pushed_to(store, diff_id) == []
    for n in range(60):
        await record_push(store, diff_id, entry(n))
    kept = await pushed_to(store, diff_id)
    assert MAX_METADATA == 50
    assert kept == [entry(n) for n in range(10, 60)]

    # The same digest and repository again: moved to the newest place, not duplicated.
    await record_push(store, diff_id, entry(20, hmac="ab" * 32))
    kept = await pushed_to(store, diff_id)
    assert len(kept) == 50
    assert kept[-1] == entry(20, hmac="ab" * 32)
    assert [e.digest for e in kept].count(entry(20).digest) == 1

    # The same digest in another repository is another location.
    await record_push(store, diff_id, entry(20, repository="localhost:5000/x"))
    assert [e.digest for e in await pushed_to(store, diff_id)].count(entry(20).digest) == 2


@pytest.mark.anyio
async def test_metadata_files_have_dockers_shape(store: Store) -> None:
    diff_id = sha256(APP)
    await record_push(store, diff_id, entry(1, hmac="cd" * 32))
    path = store.root / "distribution" / "v2metadata-by-diffid" / "sha256" / diff_id.hex
    assert json.loads(path.read_text()) == [
        {
            "Digest": entry(1).digest,
            "SourceRepository": "docker.io/library/app",
            "HMAC": "cd" * 32,
        }
    ]
    by_digest = store.root / "distribution" / "diffid-by-digest" / "sha256" / entry(1).digest.hex
    assert by_digest.read_text() == diff_id
    assert await diff_id_of(store, entry(1).digest) == diff_id
    assert await diff_id_of(store, entry(2).digest) is None


@pytest.mark.anyio
async def test_metadata_keeps_a_media_type_beside_dockers_fields(store: Store) -> None:
    """Hoist's ``MediaType`` is one more key (Docker's decoder skips it); entries without it,
    as Docker and older Hoist wrote them, still read."""
    diff_id = sha256(APP)
    typed = V2Metadata(entry(1).digest, "docker.io/library/app", media_type=OCI_LAYER_ZSTD)
    await record_push(store, diff_id, typed)
    await record_push(store, diff_id, entry(2))
    path = store.root / "distribution" / "v2metadata-by-diffid" / "sha256" / diff_id.hex
    assert [item.get("MediaType") for item in json.loads(path.read_text())] == [
        OCI_LAYER_ZSTD,
        None,
    ]
    assert await pushed_to(store, diff_id) == [typed, entry(2)]


@pytest.mark.anyio
async def test_metadata_removal(store: Store) -> None:
    diff_id = sha256(APP)
    await record_push(store, diff_id, entry(1))
    await record_push(store, diff_id, entry(2))
    await store.remove_v2_metadata(entry(1))
    assert await pushed_to(store, diff_id) == [entry(2)]
    await store.remove_v2_metadata(entry(9))  # never recorded: nothing to do
    assert await pushed_to(store, diff_id) == [entry(2)]


def test_hmac_ties_an_entry_to_its_key() -> None:
    key = b"sha256:" + hashlib.sha256(b'{"username":"u","password":"p"}').hexdigest().encode()
    unsigned = entry(1)
    mac = compute_hmac(key, unsigned.digest, unsigned.source_repository)
    signed = V2Metadata(unsigned.digest, unsigned.source_repository, mac)
    assert check_hmac(signed, key)
    assert not check_hmac(signed, b"other key")
    assert not check_hmac(unsigned, key)
    assert check_hmac(unsigned, b"")
    assert compute_hmac(b"", unsigned.digest, unsigned.source_repository) == ""


# -- robustness -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_corrupt_json_is_a_store_error_naming_the_file(
    store: Store, builder: Builder
) -> None:
    image_id = await store.add_image(builder.image([BASE]))
    config = store.root / "imagedb" / "content" / "sha256" / image_id.hex
    config.write_text("not json")
    with pytest.raises(StoreError, match=str(config)):
        await stored_image(store, image_id)

    repositories = store.root / "repositories.json"
    repositories.write_text('{"Repositories": {"app": ')
    with pytest.raises(StoreError, match=str(repositories)):
        await store.resolve("app")

    # What a push reads takes a damaged record for none (test_layer_metadata_…); the reader
    # underneath still says which file it could not read.
    damaged = store.root / "distribution" / "v2metadata-by-diffid" / "sha256" / sha256(APP).hex
    damaged.parent.mkdir(parents=True)
    damaged.write_text("[{]")
    with pytest.raises(StoreError, match=str(damaged)):
        await anyio.to_thread.run_sync(metadata.read_v2_metadata, Layout(store.root), sha256(APP))


@pytest.mark.anyio
async def test_leftover_temp_files_are_ignored(store: Store, builder: Builder) -> None:
    image_id = await store.add_image(builder.image([BASE]))
    await store.tag(ref("app"), image_id)
    # What an interrupted writer leaves: half a repositories.json, half a config, half a layer.
    (store.root / ".tmp-999-dead").write_text('{"Repositories": {"half')
    imagedb = store.root / "imagedb" / "content" / "sha256"
    (imagedb / f".tmp-999-{image_id.hex}").write_text("{")
    (imagedb / ".tmp-999-0123").write_text("{")
    half_layer = store.root / "layerdb" / "sha256" / ".tmp-999-beef"
    half_layer.mkdir()
    (half_layer / "layer.tar").write_bytes(BASE[:10])

    assert await store.resolve("app") == image_id
    assert await store.resolve(image_id.hex[:4]) == image_id
    assert [row.image_id for row in await store.images()] == [image_id]
    with pytest.raises(ImageNotFoundError):
        await store.resolve("0123")


#: Above Linux's highest pid_max: no process has it, so its temp files are a dead writer's.
DEAD_PID = 4194305


@pytest.mark.anyio
async def test_the_sweep_removes_dead_writers_leftovers_but_does_not_enter_layers(
    store: Store, builder: Builder
) -> None:
    await store.add_image(builder.image([BASE]))
    layerdb = store.root / "layerdb" / "sha256"
    (layer,) = [path for path in layerdb.iterdir() if path.is_dir()]
    metadata = store.root / "distribution" / "v2metadata-by-diffid" / "sha256"
    metadata.mkdir(parents=True)
    dead = [
        store.root / f".tmp-{DEAD_PID}-repositories",
        layerdb / f".tmp-{DEAD_PID}-staged",
        metadata / f".tmp-{DEAD_PID}-entries",
    ]
    dead[0].write_text("{")
    dead[1].mkdir()
    (dead[1] / "layer.tar").write_bytes(BASE[:10])
    dead[2].write_text("[")
    live = store.root / f".tmp-{os.getpid()}-writing"
    live.write_text("{")
    # A committed layer is renamed into place whole: no writer leaves a temp name inside it, so
    # the sweep (before every command) does not read one directory per layer to look.
    inside_a_layer = layer / f".tmp-{DEAD_PID}-never-written-here"
    inside_a_layer.write_text("x")

    removed = await store.sweep()

    assert sorted(removed) == sorted(dead)
    assert not any(path.exists() for path in dead)
    assert live.exists()
    assert inside_a_layer.exists()


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOIST_ROOT", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("HOIST_ROOT")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_root() == tmp_path / ".local" / "share" / "hoist"


_TAGGER = """
import sys, anyio
from pathlib import Path
from engine.digest import Digest
from engine.reference import parse_normalized_named
from engine.store import Store

root, image_id, name = Path(sys.argv[1]), Digest(sys.argv[2]), sys.argv[3]
print("ready", flush=True)
sys.stdin.readline()  # start together, so the two really contend

async def main() -> None:
    store = Store(root)
    for n in range(50):
        await store.tag(parse_normalized_named(f"app:{name}-{n}"), image_id)

anyio.run(main)
"""


@pytest.mark.anyio
async def test_two_processes_tag_concurrently_without_losing_any(
    store: Store, builder: Builder
) -> None:
    image_id = await store.add_image(builder.image([BASE]))
    names = ("p0", "p1")
    processes = [
        await anyio.open_process([sys.executable, "-c", _TAGGER, str(store.root), image_id, n])
        for n in names
    ]
    for process in processes:
        assert process.stdout is not None
        assert (await process.stdout.receive()).startswith(b"ready")
    for process in processes:
        assert process.stdin is not None
        await process.stdin.send(b"go\n")
    assert [await process.wait() for process in processes] == [0, 0]
    for process in processes:
        await process.aclose()

    on_disk = json.loads((store.root / "repositories.json").read_text())
    tags = on_disk["Repositories"]["app"]
    expected = {f"app:{p}-{n}" for p in names for n in range(50)}
    assert set(tags) == expected
    assert set(tags.values()) == {image_id}
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.anyio
async def test_concurrent_imports_of_one_image_in_one_process(
    store: Store, builder: Builder
) -> None:
    # Both race to create the same layer directories; one wins each, the other discards its copy.
    source = builder.image([BASE, APP, TOOLS])
    results: list[Digest] = []

    async def add() -> None:
        results.append(await store.add_image(source))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(add)
    assert results == [sha256(source.config)] * 4
    assert len(layer_dirs(store)) == 3
    stored = await stored_image(store, results[0])
    assert [await read_all(layer) for layer in stored.layers] == [BASE, APP, TOOLS]


@pytest.mark.anyio
async def test_layer_metadata_round_trip_and_damage_is_no_record(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    diff_id = Digest.of(b"layer")
    other = Digest.of(b"other layer")
    blob = Descriptor(DOCKER_LAYER_GZIP, Digest.of(b"gz"), 12)
    entry = V2Metadata(blob.digest, "127.0.0.1:5000/a/b")

    assert (await store.layer_metadata([diff_id], "gzip-test"))[diff_id].metadata == []
    await store.record_pushes([MetadataUpdate(diff_id, entry, blob)], "gzip-test")
    known = await store.layer_metadata([diff_id, other], "gzip-test")

    assert known[diff_id].metadata == [entry] and known[diff_id].compressed == blob
    assert known[other].metadata == [] and known[other].compressed is None
    assert (await store.layer_metadata([diff_id], "another-compressor"))[diff_id].compressed is None

    path = tmp_path / "root/distribution/v2metadata-by-diffid/sha256" / diff_id.hex
    await anyio.to_thread.run_sync(path.write_bytes, b"{not json")
    damaged = await store.layer_metadata([diff_id], "gzip-test")
    assert damaged[diff_id].metadata == [] and damaged[diff_id].compressed == blob


@pytest.mark.anyio
async def test_compressed_forms_share_one_file_and_a_damaged_one_is_no_record(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "root")
    diff_ids = [Digest.of(f"layer {n}".encode()) for n in range(5)]
    blobs = [Descriptor(DOCKER_LAYER_GZIP, Digest.of(f"gz {n}".encode()), n + 1) for n in range(5)]
    records = [
        MetadataUpdate(d, V2Metadata(b.digest, "127.0.0.1:5000/a/b"), b)
        for d, b in zip(diff_ids, blobs, strict=True)
    ]
    await store.record_pushes(records, "gzip-test")

    forms = tmp_path / "root/layerdb/compressed"
    assert [p.name for p in forms.iterdir()] == ["gzip-test.json"]
    known = await store.layer_metadata(diff_ids, "gzip-test")
    assert [known[d].compressed for d in diff_ids] == blobs
    # Another Store on the root (another process) reads what this one wrote.
    assert (await Store(tmp_path / "root").layer_metadata(diff_ids[:1], "gzip-test"))[
        diff_ids[0]
    ].compressed == blobs[0]

    damage = forms / "damage.tmp"
    await anyio.to_thread.run_sync(damage.write_bytes, b"[1, 2")
    await anyio.to_thread.run_sync(damage.replace, forms / "gzip-test.json")  # as writers do
    damaged = await store.layer_metadata(diff_ids, "gzip-test")
    assert [damaged[d].compressed for d in diff_ids] == [None] * 5
    assert [damaged[d].metadata for d in diff_ids] == [[r.entry] for r in records]
    await store.record_pushes(records[:1], "gzip-test")  # written anew, whole
    healed = await store.layer_metadata(diff_ids, "gzip-test")
    assert [healed[d].compressed for d in diff_ids] == [blobs[0], None, None, None, None]


@pytest.mark.anyio
async def test_concurrent_push_records_all_land_and_unchanged_files_stay(tmp_path: Path) -> None:
    """Fifty pushes of one shared layer record at once: every location is kept, in the order
    the pushes recorded them; recording what a file already says does not replace it."""
    store = Store(tmp_path / "root")
    diff_id = Digest.of(b"shared layer")
    blob = Descriptor(DOCKER_LAYER_GZIP, Digest.of(b"gz"), 12)
    locations = [V2Metadata(blob.digest, f"127.0.0.1:5000/batch/img{n:02d}") for n in range(50)]

    async with anyio.create_task_group() as group:
        for location in locations:
            group.start_soon(store.record_pushes, [MetadataUpdate(diff_id, location, blob)], "gz")

    assert (await pushed_to(store, diff_id)) == locations
    layout = tmp_path / "root/distribution"
    files = [
        layout / "v2metadata-by-diffid/sha256" / diff_id.hex,
        layout / "diffid-by-digest/sha256" / blob.digest.hex,
    ]
    before = [path.stat().st_ino for path in files]
    await store.record_pushes([MetadataUpdate(diff_id, locations[-1], blob)], "gz")
    assert [path.stat().st_ino for path in files] == before, "rewritten though unchanged"
    await store.record_pushes([MetadataUpdate(diff_id, locations[0], blob)], "gz")
    assert (await pushed_to(store, diff_id))[-1] == locations[0]
    assert files[0].stat().st_ino != before[0]
