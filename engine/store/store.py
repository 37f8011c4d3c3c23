"""The local store: Docker's image layout under one root, behind an async API.

Every method does its file work in worker threads. Whatever reads, decides and writes runs in one
thread under the root's lock, so two processes sharing a root (or two tasks of one) never lose
each other's changes. Imports stream layers outside the lock and take it only to commit the config:
an image never appears before all of its layers, and a concurrent ``remove`` cannot take a layer
from under an image being committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import anyio

from engine import logs
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import (
    HoistError,
    ImageNotFoundError,
    ImageSourceError,
    InvalidReferenceError,
    StoreError,
)
from engine.image.base import FileLayer, Image, Layer, SourceImage
from engine.media_types import DOCKER_CONFIG
from engine.offload import store_bound
from engine.reference import (
    Reference,
    familiar_name,
    familiar_string,
    parse_normalized_named,
    with_default_tag,
)
from engine.store import compressed, metadata, references
from engine.store import images as imagedb
from engine.store.atomic import ParsedOnce, exclusive_lock
from engine.store.ingest import stage_layer
from engine.store.layers import chain_ids, check_layer, commit_layer, delete_layer, has_layer
from engine.store.layout import Layout
from engine.store.metadata import V2Metadata
from engine.store.recorder import Recorder
from engine.store.references import Repositories
from engine.store.sweep import sweep_leftovers

log = logs.get_logger("engine.store")

T = TypeVar("T")

#: How often ``add_image`` re-imports layers that a concurrent removal took away.
COMMIT_ATTEMPTS = 3
#: What ``images()`` shows for an image without a tag, as Docker shows it.
NONE = "<none>"


@dataclass(frozen=True)
class ImageSummary:
    """One row of ``hoist images``: a tag (or ``<none>``) and the image it names."""

    repository: str
    tag: str
    image_id: Digest
    created: str | None
    size: int


@dataclass(frozen=True)
class ImageDetails:
    """What ``docker inspect`` shows of a stored image: its config as stored, its size, and the
    references naming it (familiar strings: tags, then digest references)."""

    image_id: Digest
    config: bytes
    size: int
    tags: tuple[str, ...]
    digests: tuple[str, ...]


class Store:
    """Images, tags, layers and push metadata under ``root``, laid out as Docker lays them out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._layout = Layout(root)
        # A batch push resolves every image: checking each tag of the file anew, twice per
        # image, cost more than the rest of resolving.
        self._repositories_file = ParsedOnce(
            self._layout.repositories, references.load_repositories
        )
        self._forms: dict[str, ParsedOnce[compressed.Forms]] = {}
        self._recorder: Recorder[tuple[MetadataUpdate, str]] = Recorder(self._write_records)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with exclusive_lock(self._layout.lock):
            yield

    async def sweep(self) -> list[Path]:
        """Remove what interrupted writes left behind (their writers are dead)."""
        # None when there is no root yet. Committed layers hold no temp names (see sweep).
        return await store_bound(sweep_leftovers, self.root, [self._layout.layerdb])

    # -- importing and naming ---------------------------------------------------------------

    async def add_image(self, image: Image) -> Digest:
        """Import ``image``: verify and store each missing layer, then its config; its image ID."""
        config = image.config
        diff_ids = imagedb.source_config(config).diff_ids
        layers = list(image.layers)
        if len(layers) != len(diff_ids):
            raise ImageSourceError(
                f"image has {len(layers)} layers but its config lists {len(diff_ids)} diff IDs"
            )
        created: list[Digest] = []
        try:
            for _ in range(COMMIT_ATTEMPTS):
                await self._import_layers(layers, diff_ids, created)
                if await store_bound(self._commit_image, config, chain_ids(diff_ids)):
                    return Digest.of(config)
            raise StoreError(f"{self.root}: layers kept vanishing while the image was committed")
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(HoistError):
                await store_bound(self._release_layers, created)
            raise

    async def _import_layers(
        self, layers: Sequence[Layer], diff_ids: Sequence[Digest], created: list[Digest]
    ) -> None:
        """Store every layer whose chain ID is missing; record the ones this call created."""
        ids = chain_ids(diff_ids)
        for index, (layer, diff_id, chain_id) in enumerate(zip(layers, diff_ids, ids, strict=True)):
            if await store_bound(has_layer, self._layout, chain_id):
                continue
            what = f"layer {index + 1} of {len(layers)}"
            staged = await stage_layer(self._layout, layer, diff_id, what)
            parent = ids[index - 1] if index else None
            if await store_bound(commit_layer, self._layout, staged, chain_id, parent):
                created.append(chain_id)

    def _commit_image(self, config: bytes, ids: Sequence[Digest]) -> bool:
        with self._lock():
            if not all(has_layer(self._layout, chain_id) for chain_id in ids):
                return False
            if not imagedb.has_image(self._layout, Digest.of(config)):
                imagedb.write_config(self._layout, config)
            return True

    def _release_layers(self, candidates: Sequence[Digest]) -> None:
        """Delete layers of a failed import that no stored image uses."""
        if not candidates:
            return
        with self._lock():
            used = self._used_chain_ids()
            for chain_id in reversed(candidates):
                if chain_id not in used:
                    delete_layer(self._layout, chain_id)

    def _used_chain_ids(self) -> set[Digest]:
        used: set[Digest] = set()
        for image_id in imagedb.image_ids(self._layout):
            used.update(chain_ids(imagedb.load_config(self._layout, image_id).diff_ids))
        return used

    async def tag(self, ref: Reference, image_id: Digest) -> None:
        """Point ``ref`` (``latest`` when it has no tag) at a stored image."""
        if ref.digest is not None:
            raise InvalidReferenceError(
                "refusing to create a tag with a digest reference", str(ref)
            )
        await store_bound(self._tag, ref, image_id)

    def _tag(self, ref: Reference, image_id: Digest) -> None:
        with self._lock():
            if not imagedb.has_image(self._layout, image_id):
                raise ImageNotFoundError(f"No such image: {image_id}")
            repositories = references.load_repositories(self._layout.repositories)
            references.add_reference(repositories, ref, image_id)
            references.save_repositories(self._layout.repositories, repositories)

    # -- finding ----------------------------------------------------------------------------

    async def resolve(self, text: str) -> Digest:
        """The image ID that ``text`` names: a reference, an image ID, or an unambiguous prefix."""
        return await store_bound(self._resolve, text)

    def _resolve(self, text: str) -> Digest:
        return self._find(text, self._repositories())[0]

    def _repositories(self) -> Repositories:
        # For reading only, never to change: a read-modify-write under the lock loads the file
        # itself, as a cached version could be stale (see ParsedOnce) and lose a change.
        return self._repositories_file.get()

    def _find(self, text: str, repositories: Repositories) -> tuple[Digest, Reference | None]:
        """Docker's order: a reference first, then an ID (prefix). The reference is returned
        (with its default tag) when that is how ``text`` named the image."""
        ref = _parse_reference(text)
        if ref is not None:
            image_id = references.lookup(repositories, ref)
            if image_id is not None:
                return image_id, with_default_tag(ref)
        image_id = imagedb.search(self._layout, text)
        if image_id is None:
            raise ImageNotFoundError(f"No such image: {text}")
        return image_id, None

    async def references_by_name(self, name: Reference) -> list[tuple[Reference, Digest]]:
        """Every tag of ``name``'s repository with its image ID, sorted (``push --all-tags``)."""
        found = await store_bound(self._references_by_name, name)
        return [(ref, image_id) for ref, image_id in found if _is_tag(ref)]

    def _references_by_name(self, name: Reference) -> list[tuple[Reference, Digest]]:
        return references.references_in(self._repositories(), name)

    async def image_to_push(
        self, text: str, compressor: str
    ) -> tuple[SourceImage, dict[Digest, LayerMetadata]]:
        """The stored image ``text`` names and its layers' ``layer_metadata``, in one worker-thread
        call: its config and one ``FileLayer`` per ``layer.tar``.

        The store's thread serves calls in turn: in a batch, the first image then starts after
        one call rather than behind the resolution of every other image.
        """

        def image_to_push() -> tuple[SourceImage, dict[Digest, LayerMetadata]]:
            image = self._image(self._resolve(text))
            diff_ids = [layer.diff_id for layer in image.layers if layer.diff_id is not None]
            return image, self._layer_metadata(diff_ids, compressor)

        return await store_bound(image_to_push)

    def _image(self, image_id: Digest) -> SourceImage:
        config = imagedb.read_config(self._layout, image_id)
        diff_ids = imagedb.config_of(self._layout, image_id, config).diff_ids
        layers: list[Layer] = []
        for diff_id, chain_id in zip(diff_ids, chain_ids(diff_ids), strict=True):
            stored = check_layer(self._layout, chain_id)
            if stored.diff_id != diff_id:
                raise StoreError(f"{stored.tar.parent}: diff {stored.diff_id}, expected {diff_id}")
            # Ingest checked every byte against the diff ID: a push need not hash it again.
            layer = FileLayer(path=stored.tar, size=stored.size, diff_id=diff_id, verified=True)
            layers.append(layer)
        tags = [r for r in references.references_to(self._repositories(), image_id) if _is_tag(r)]
        return SourceImage(
            config=config,
            layers=layers,
            config_media_type=DOCKER_CONFIG,
            origin="store",
            names=tuple(familiar_string(r) for r in tags),
        )

    async def inspect(self, text: str) -> ImageDetails:
        """The image ``text`` names (as ``resolve``), for ``docker inspect``."""
        return await store_bound(self._inspect, text)

    def _inspect(self, text: str) -> ImageDetails:
        image_id = self._resolve(text)
        config = imagedb.read_config(self._layout, image_id)
        diff_ids = imagedb.config_of(self._layout, image_id, config).diff_ids
        size = sum(check_layer(self._layout, c).size for c in chain_ids(diff_ids))
        refs = references.references_to(self._repositories(), image_id)
        tags = tuple(familiar_string(r) for r in refs if _is_tag(r))
        digests = tuple(familiar_string(r) for r in refs if r.digest is not None)
        return ImageDetails(image_id, config, size, tags, digests)

    async def images(self) -> list[ImageSummary]:
        """One row per tag (``<none>`` for an untagged image), the newest image first."""
        return await store_bound(self._images)

    def _images(self) -> list[ImageSummary]:
        repositories = self._repositories()
        rows: list[ImageSummary] = []
        for image_id in imagedb.image_ids(self._layout):
            config = imagedb.load_config(self._layout, image_id)
            size = sum(check_layer(self._layout, c).size for c in chain_ids(config.diff_ids))
            tags = [r for r in references.references_to(repositories, image_id) if _is_tag(r)]
            names = [(familiar_name(r), r.tag or NONE) for r in tags] or [(NONE, NONE)]
            rows += [ImageSummary(repo, tag, image_id, config.created, size) for repo, tag in names]
        rows.sort(key=lambda row: (row.repository, row.tag))
        rows.sort(key=lambda row: _timestamp(row.created), reverse=True)
        return rows

    # -- removing ---------------------------------------------------------------------------

    async def remove(self, text: str, *, force: bool = False) -> list[str]:
        """``docker rmi``: untag, and once no reference is left delete the image and the layers
        no other image uses. Returns Docker's ``Untagged: …`` / ``Deleted: sha256:…`` lines."""
        return await store_bound(self._remove, text, force)

    def _remove(self, text: str, force: bool) -> list[str]:
        with self._lock():
            repositories = references.load_repositories(self._layout.repositories)
            image_id, ref = self._find(text, repositories)
            if ref is not None:
                records = _untag_reference(repositories, ref, image_id)
            else:
                records = _untag_by_id(repositories, image_id, force)
            if records:
                references.save_repositories(self._layout.repositories, repositories)
            if references.references_to(repositories, image_id):
                return records
            return records + self._delete_image(image_id)

    def _delete_image(self, image_id: Digest) -> list[str]:
        try:
            ids = chain_ids(imagedb.load_config(self._layout, image_id).diff_ids)
        except StoreError:
            ids = []  # a corrupt config can still be removed; its layers are left for others
        imagedb.delete_config(self._layout, image_id)
        records = [f"Deleted: {image_id}"]
        used = self._used_chain_ids()
        for chain_id in reversed(ids):
            if chain_id not in used and has_layer(self._layout, chain_id):
                delete_layer(self._layout, chain_id)
                records.append(f"Deleted: {chain_id}")
        return records

    # -- distribution metadata --------------------------------------------------------------

    async def remove_v2_metadata(self, entry: V2Metadata) -> None:
        """Forget a location that turned out wrong (a mount from it failed).

        A hint, as ``record_pushes``'s are: a record that cannot be read or rewritten is logged,
        never raised (it would fail a push that goes on fine without it, by uploading).
        """
        await store_bound(self._remove_metadata, entry)

    def _remove_metadata(self, entry: V2Metadata) -> None:
        try:
            with self._lock():
                metadata.remove_v2_metadata(self._layout, entry)
        except StoreError as exc:
            log.warning("push metadata not forgotten", digest=str(entry.digest), error=str(exc))

    # -- what a push knows, in one go ---------------------------------------------------------

    async def layer_metadata(
        self, diff_ids: Sequence[Digest], compressor: str
    ) -> dict[Digest, LayerMetadata]:
        """For each diff ID: where it was pushed, and what ``compressor`` made of it.

        One worker-thread call for a whole image. An unreadable record is no record: push
        metadata is a hint, and written without fsync.
        """
        return await store_bound(self._layer_metadata, diff_ids, compressor)

    def _layer_metadata(
        self, diff_ids: Sequence[Digest], compressor: str
    ) -> dict[Digest, LayerMetadata]:
        forms = _or_nothing(self._compressed_forms(compressor).get) or {}
        return {
            diff_id: LayerMetadata(
                _or_nothing(metadata.read_v2_metadata, self._layout, diff_id) or [],
                forms.get(diff_id),
            )
            for diff_id in diff_ids
        }

    def _compressed_forms(self, compressor: str) -> ParsedOnce[compressed.Forms]:
        forms = self._forms.get(compressor)
        if forms is None:
            forms = ParsedOnce(self._layout.compressed_forms(compressor), compressed.read_forms)
            self._forms[compressor] = forms
        return forms

    async def record_pushes(self, records: Sequence[MetadataUpdate], compressor: str) -> None:
        """Remember where layers now are (and what they compressed to); return once written, or,
        inside ``batched_records``, once left to the batch's next write (see ``Recorder``).

        Push metadata is a hint: what cannot be written is logged, never raised (it would fail
        whichever push happened to write the group, for a record that was not its own).
        """
        await self._recorder.record((record, compressor) for record in records)

    def batched_records(self) -> AbstractAsyncContextManager[None]:
        """A batch push: its records are written a few times a second and when it ends."""
        return self._recorder.batched()

    async def _write_records(self, group: list[tuple[MetadataUpdate, str]]) -> None:
        await store_bound(self._record_pushes, group)

    def _record_pushes(self, batch: Sequence[tuple[MetadataUpdate, str]]) -> None:
        entries: dict[Digest, list[V2Metadata]] = {}
        forms: dict[str, compressed.Forms] = {}
        for record, compressor in batch:
            entries.setdefault(record.diff_id, []).append(record.entry)
            if record.compressed is not None:
                forms.setdefault(compressor, {})[record.diff_id] = record.compressed
        try:
            with self._lock():
                for diff_id, layer_entries in entries.items():
                    self._record_layer(diff_id, layer_entries)
                for compressor, made in forms.items():
                    self._record_forms(compressor, made)
        except StoreError as exc:
            log.warning("push metadata not recorded", error=str(exc))

    def _record_layer(self, diff_id: Digest, entries: Sequence[V2Metadata]) -> None:
        try:
            metadata.add_v2_metadata(self._layout, diff_id, *entries)
        except StoreError as exc:
            log.warning("push metadata not recorded", diff_id=str(diff_id), error=str(exc))

    def _record_forms(self, compressor: str, made: compressed.Forms) -> None:
        path = self._layout.compressed_forms(compressor)
        try:
            # Under the lock: the file itself, not the cached parse, or another writer's forms
            # could be lost.
            compressed.add_forms(path, _or_nothing(compressed.read_forms, path) or {}, made)
        except StoreError as exc:
            log.warning("compressed forms not recorded", compressor=compressor, error=str(exc))


@dataclass(frozen=True)
class LayerMetadata:
    """What the store knows of one layer before a push."""

    metadata: list[V2Metadata]
    compressed: Descriptor | None


@dataclass(frozen=True)
class MetadataUpdate:
    """A layer now in a repository: the metadata entry, and its compressed form if Hoist made it."""

    diff_id: Digest
    entry: V2Metadata
    compressed: Descriptor | None = None


def _or_nothing(read: Callable[..., T], *args: object) -> T | None:
    try:
        return read(*args)
    except StoreError as exc:
        log.warning("unreadable push record ignored", error=str(exc))
        return None


def _parse_reference(text: str) -> Reference | None:
    try:
        return parse_normalized_named(text)
    except InvalidReferenceError:
        if imagedb.is_id_prefix(text):
            return None  # "sha256:" + hex: no reference, but maybe an ID prefix
        raise


def _is_tag(ref: Reference) -> bool:
    return ref.tag is not None and ref.digest is None


def _untag_reference(repositories: Repositories, ref: Reference, image_id: Digest) -> list[str]:
    """Untag ``ref``; when no tag of its repository is left on the image, its digest references
    in that repository go too (Docker's rule)."""
    references.delete_reference(repositories, ref)
    records = [f"Untagged: {familiar_string(ref)}"]
    if ref.digest is not None:
        return records
    same_repository = [
        r for r in references.references_to(repositories, image_id) if r.name == ref.name
    ]
    if any(_is_tag(r) for r in same_repository):
        return records
    for leftover in same_repository:
        references.delete_reference(repositories, leftover)
        records.append(f"Untagged: {familiar_string(leftover)}")
    return records


def _untag_by_id(repositories: Repositories, image_id: Digest, force: bool) -> list[str]:
    """An image named by ID loses its references only when they are one repository's single
    tag (plus its digests), or when forced; else Docker refuses."""
    refs = references.references_to(repositories, image_id)
    if not refs:
        return []
    if not force and not _single_reference(refs):
        raise StoreError(
            f"conflict: unable to delete {image_id.short} (must be forced)"
            " - image is referenced in multiple repositories"
        )
    for ref in refs:
        references.delete_reference(repositories, ref)
    return [f"Untagged: {familiar_string(ref)}" for ref in refs]


def _single_reference(refs: Sequence[Reference]) -> bool:
    tags = [r for r in refs if r.digest is None]
    if len(refs) == 1:
        return True
    if len(tags) > 1:
        return False
    single = tags[0] if tags else refs[0]
    return {r.name for r in refs if r.digest is not None} == {single.name}


def _timestamp(created: str | None) -> datetime:
    """``created`` as an aware time for sorting; missing or unreadable ones sort oldest."""
    if created is not None:
        try:
            parsed = datetime.fromisoformat(created)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)
