"""The two kinds of layer, and what the push metadata may say of each (pure logic).

The audit of issue 11, one case each: every place a layer is identified (transfer and ledger
keys, existence checks, mount mounts, the anonymous mount, what is recorded) must keep a blob
its source fixes apart from a tar Hoist compresses, even when a digest equals a diff ID.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import media_types
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import ImageSourceError
from engine.image.base import FileLayer
from engine.push.compression import Compression
from engine.push.layer_blob import FixedBlob, ToCompress, blob_key, layer_blob
from engine.push.metadata_service import ExistenceCandidate, MetadataService
from engine.store import LayerMetadata, MetadataUpdate, V2Metadata
from tests.support.memory_registry import MemoryMetadataStore

DIFF_ID = Digest.of(b"the tar")
HOIST_GZIP = Descriptor(media_types.DOCKER_LAYER_GZIP, Digest.of(b"isal gzip"), 90)
OTHER_GZIP = Descriptor(media_types.OCI_LAYER_GZIP, Digest.of(b"zlib gzip"), 80)
TARGET = "127.0.0.1:5000/b"


def _layer(descriptor: Descriptor | None = None, diff_id: Digest | None = DIFF_ID) -> FileLayer:
    return FileLayer(Path("/nonexistent"), size=100, diff_id=diff_id, descriptor=descriptor)


async def _metadata_service(
    *metadata: V2Metadata, compressed: Descriptor | None = HOIST_GZIP
) -> MetadataService:
    service = _recording_service()
    await service.load([_layer()], {DIFF_ID: LayerMetadata(list(metadata), compressed)})
    return service


def _recording_service() -> MetadataService:
    """A service that keeps records (as with a store) without ever flushing them."""
    return MetadataService(store=MemoryMetadataStore(), hmac_key=b"")  # type: ignore[arg-type]


def _in(repository: str, blob: Descriptor = HOIST_GZIP) -> V2Metadata:
    return V2Metadata(blob.digest, f"127.0.0.1:5000/{repository}", media_type=blob.media_type)


def test_a_layer_with_a_descriptor_is_its_fixed_blob() -> None:
    assert layer_blob(_layer(OTHER_GZIP)) == FixedBlob(OTHER_GZIP, DIFF_ID)
    assert layer_blob(_layer()) == ToCompress(DIFF_ID, 100)


def test_an_uncompressed_blob_and_the_tar_of_its_diff_id_have_different_keys() -> None:
    """An uncompressed layer's digest is its diff ID; the keys still differ."""
    uncompressed = Descriptor(media_types.OCI_LAYER, DIFF_ID, 100)
    fixed, tar = layer_blob(_layer(uncompressed)), layer_blob(_layer())
    assert fixed.key != tar.key
    assert fixed.key == blob_key(DIFF_ID)  # a config of those bytes would be the same blob


def test_a_tar_without_a_diff_id_cannot_be_named_so_is_refused() -> None:
    with pytest.raises(ImageSourceError):
        layer_blob(_layer(diff_id=None))


@pytest.mark.anyio
async def test_a_fixed_blob_hears_only_of_its_own_digest() -> None:
    """Hoist's blob in ``a`` is another blob than the layout's: neither checked nor mounted."""
    service = await _metadata_service(_in("a"), _in("c", OTHER_GZIP), _in("b"))
    candidates = service.candidates(FixedBlob(OTHER_GZIP, DIFF_ID), TARGET)

    assert [check.digest for check in candidates.existence] == [OTHER_GZIP.digest]
    assert [entry.source_repository for entry in candidates.mounts] == ["127.0.0.1:5000/c"]
    assert {entry.digest for entry in candidates.mounts} == {OTHER_GZIP.digest}
    assert candidates.digest == OTHER_GZIP.digest


@pytest.mark.anyio
async def test_a_tar_may_use_any_gzip_blob_of_its_diff_id() -> None:
    service = await _metadata_service(_in("a"), _in("c", OTHER_GZIP))
    candidates = service.candidates(
        ToCompress(DIFF_ID, 20 << 20), TARGET
    )  # big: several mounts tried

    assert candidates.existence[0] == ExistenceCandidate(
        HOIST_GZIP.digest
    )  # Hoist's own form, first
    assert {entry.digest for entry in candidates.mounts} == {HOIST_GZIP.digest, OTHER_GZIP.digest}
    assert candidates.digest == HOIST_GZIP.digest


UNCOMPRESSED = Descriptor(media_types.OCI_LAYER, DIFF_ID, 100)
ZSTD = Descriptor(media_types.OCI_LAYER_ZSTD, Digest.of(b"zstd"), 70)


def test_a_tar_takes_only_gzip_blobs_of_its_diff_id() -> None:
    """An uncompressed or zstd blob of the same tar must not be named as gzip."""
    records = [_in("a", UNCOMPRESSED), _in("b", ZSTD), _in("c"), _in("d", OTHER_GZIP)]
    assert ToCompress(DIFF_ID, 100).locations(records, HOIST_GZIP.digest) == [
        _in("c"),
        _in("d", OTHER_GZIP),
    ]


def test_an_older_record_without_a_media_type_counts_only_for_hoists_own_blob() -> None:
    own, other = V2Metadata(HOIST_GZIP.digest, "r/a"), V2Metadata(ZSTD.digest, "r/b")
    assert ToCompress(DIFF_ID, 100).locations([own, other], HOIST_GZIP.digest) == [own]
    assert ToCompress(DIFF_ID, 100).locations([own, other], None) == []


@pytest.mark.anyio
async def test_a_record_of_the_target_itself_is_the_one_a_missing_blob_disproves() -> None:
    here = _in("b", OTHER_GZIP)
    service = await _metadata_service(here, compressed=None)
    candidates = service.candidates(ToCompress(DIFF_ID, 100), TARGET)
    assert candidates.existence == (ExistenceCandidate(OTHER_GZIP.digest, here),)


@pytest.mark.anyio
async def test_a_forgotten_record_is_offered_no_more() -> None:
    stale = _in("c")  # the newest record: offered first, until forgotten
    service = await _metadata_service(_in("a"), stale)
    tar = ToCompress(DIFF_ID, 20 << 20)
    assert service.candidates(tar, TARGET).mounts == (stale, _in("a"))
    await service.forget(stale)
    assert service.candidates(tar, TARGET).mounts == (_in("a"),)
    assert isinstance(service.store, MemoryMetadataStore) and service.store.removed == [stale]


@pytest.mark.anyio
async def test_what_a_push_placed_is_known_to_it_at_once() -> None:
    """A manifest refused for a blob has each checked again before anything is sent anew."""
    service = await _metadata_service(compressed=None)
    tar = ToCompress(DIFF_ID, 100)
    assert service.candidates(tar, TARGET).existence == ()
    service.remember(tar, TARGET, HOIST_GZIP, made=True)
    record = V2Metadata(HOIST_GZIP.digest, TARGET, media_type=HOIST_GZIP.media_type)
    assert service.candidates(tar, TARGET).existence == (
        ExistenceCandidate(HOIST_GZIP.digest, record),
    )


def test_found_evidence_names_the_blob_of_the_layers_kind() -> None:
    fixed = FixedBlob(OTHER_GZIP, DIFF_ID)
    assert fixed.found(OTHER_GZIP.digest, 80) == OTHER_GZIP
    with pytest.raises(AssertionError):
        fixed.found(HOIST_GZIP.digest, 90)
    found = ToCompress(DIFF_ID, 100).found(OTHER_GZIP.digest, 80)
    assert found == Descriptor(media_types.DOCKER_LAYER_GZIP, OTHER_GZIP.digest, 80)


@pytest.mark.parametrize("blob", [OTHER_GZIP, UNCOMPRESSED, ZSTD])
def test_a_fixed_blob_is_recorded_with_its_media_type(blob: Descriptor) -> None:
    service = _recording_service()
    service.remember(FixedBlob(blob, DIFF_ID), TARGET, blob, made=True)
    record = V2Metadata(blob.digest, TARGET, media_type=blob.media_type)
    assert service._pending == [MetadataUpdate(DIFF_ID, record, None)]


@pytest.mark.parametrize(("made", "form"), [(True, HOIST_GZIP), (False, None)])
def test_a_tar_records_a_compressed_form_only_when_hoist_made_it(
    made: bool, form: Descriptor | None
) -> None:
    """A blob found or mounted may be another tool's gzip: no record of what isal makes."""
    service = _recording_service()
    service.remember(ToCompress(DIFF_ID, 100), TARGET, HOIST_GZIP, made=made)
    record = V2Metadata(HOIST_GZIP.digest, TARGET, media_type=HOIST_GZIP.media_type)
    assert service._pending == [MetadataUpdate(DIFF_ID, record, form)]


@pytest.mark.anyio
async def test_without_a_store_a_forgotten_record_is_still_offered_no_more() -> None:
    stale = _in("c")
    service = MetadataService(store=None, hmac_key=b"")
    await service.load([_layer()], {DIFF_ID: LayerMetadata([stale, _in("a")], HOIST_GZIP)})
    tar = ToCompress(DIFF_ID, 20 << 20)

    await service.forget(stale)

    assert service.candidates(tar, TARGET).mounts == (_in("a"),)


ZSTD_PUSH = Compression("zstd", 3)


def test_a_tar_pushed_as_zstd_takes_only_zstd_blobs_of_its_diff_id() -> None:
    """A gzip blob is another compression than the push asked for, whatever its level."""
    records = [_in("a", UNCOMPRESSED), _in("b", ZSTD), _in("c"), _in("d", OTHER_GZIP)]
    tar = ToCompress(DIFF_ID, 100, ZSTD_PUSH)
    assert tar.locations(records, ZSTD.digest) == [_in("b", ZSTD)]
    assert tar.found(ZSTD.digest, 70) == ZSTD


def test_a_gzip_placement_never_answers_a_zstd_push_of_the_same_tar() -> None:
    gzip_key = ToCompress(DIFF_ID, 100).key
    assert ToCompress(DIFF_ID, 100, ZSTD_PUSH).key != gzip_key
    assert ToCompress(DIFF_ID, 100, Compression("gzip", 0)).key == gzip_key, "any level will do"
    assert layer_blob(_layer(), ZSTD_PUSH) == ToCompress(DIFF_ID, 100, ZSTD_PUSH)
