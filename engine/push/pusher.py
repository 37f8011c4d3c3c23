"""One tag of one image to one repository (Docker's ``pushV2Tag``).

Layers go through the shared TransferManager (one coroutine each, a global slot limit, dedup);
the first failure cancels the others. The config follows, and the manifest is PUT only once
every blob it names is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
import structlog

from engine.concurrency import gather
from engine.digest import Digest
from engine.errors import RegistryResponseError
from engine.image import media_types
from engine.image.base import Descriptor, Image, Layer, SourceIndex
from engine.progress import events
from engine.progress.events import LayerProgress, Message, ProgressSink, PushComplete
from engine.push import manifest as manifests
from engine.push.candidates import hmac_key
from engine.push.config import ConfigUpload, worth_checking
from engine.push.layer import LayerUpload
from engine.push.ledger import BlobLedger
from engine.push.memory import PushMemory
from engine.push.result import LayerResult, PushResult
from engine.push.upload import UploadOptions
from engine.reference import Reference
from engine.registry.client import RegistryClient
from engine.registry.pool import RegistryPool
from engine.retry import retry_call
from engine.store import Knowledge, Store
from engine.transfer import TransferManager

T = TypeVar("T")

log = structlog.get_logger("engine.push")


@dataclass
class Pusher:
    pool: RegistryPool
    transfers: TransferManager
    store: Store | None = None
    ledger: BlobLedger = field(default_factory=BlobLedger)
    options: UploadOptions = field(default_factory=UploadOptions)

    async def push(
        self,
        ref: Reference,
        image: Image,
        progress: ProgressSink,
        known: Mapping[Digest, Knowledge] | None = None,
    ) -> PushResult:
        """Push ``image`` as ``ref`` (which carries its tag); ``known``: what the store knows of
        its layers, when the caller read it already."""
        tag = _tag(ref)
        progress(Message(f"The push refers to repository [{ref.name}]"))
        client = await self.pool.client(ref.domain)
        pushed = await self._push_image(client, ref, tag, image, progress, known)
        progress(PushComplete(ref.name, tag, pushed.digest, len(pushed.manifest)))
        return PushResult(
            ref.name, tag, pushed.digest, len(pushed.manifest), pushed.media_type, pushed.layers
        )

    async def push_index(
        self, ref: Reference, index: SourceIndex, progress: ProgressSink
    ) -> PushResult:
        """Every child by digest, concurrently, then the index itself by tag, byte for byte."""
        tag = _tag(ref)
        manifests.check_size(index.raw)
        progress(Message(f"The push refers to repository [{ref.name}]"))
        client = await self.pool.client(ref.domain)

        async def child(descriptor: Descriptor, image: Image) -> list[LayerResult]:
            reference = str(descriptor.digest)
            return (await self._push_image(client, ref, reference, image, progress)).layers

        pushed = await gather([partial(child, d, image) for d, image in index.children])
        try:
            digest = await self._retrying(
                client.put_manifest, ref.path, tag, index.media_type, index.raw
            )
        except RegistryResponseError as refusal:
            raise manifests.refused(refusal) from refusal
        progress(PushComplete(ref.name, tag, digest, len(index.raw)))
        layers = [layer for child_layers in pushed for layer in child_layers]
        return PushResult(ref.name, tag, digest, len(index.raw), index.media_type, layers)

    async def _push_image(
        self,
        client: RegistryClient,
        ref: Reference,
        reference: str,
        image: Image,
        progress: ProgressSink,
        known: Mapping[Digest, Knowledge] | None = None,
    ) -> _PushedImage:
        """Layers and config of one image, then its manifest as ``reference`` (a tag or its
        digest), PUT only once every blob it names is committed."""
        memory = PushMemory(self.store, hmac_key(await self.pool.credentials(ref.domain)))
        await memory.load(image.layers, known)
        placing = _Placing(client, ref, image, memory, progress)
        try:
            layers = await self._place_layers(placing, self.ledger)
        except BaseException:
            await memory.flush()
            raise
        # Where the layers went is written to the store while the config and manifest go: the
        # store's thread is busiest when a batch's pushes finish, and the registry need not wait.
        recording = asyncio.ensure_future(memory.flush())
        try:
            pushed = await self._complete(placing, reference, layers)
        finally:
            # Shielded: a push cancelled now (a sibling failed, Ctrl-C) still records its layers.
            with anyio.CancelScope(shield=True):
                await asyncio.wait({recording})
        recording.result()  # a failure to record, once the push's own has not come first
        return pushed

    async def _complete(
        self, placing: _Placing, reference: str, layers: list[LayerResult]
    ) -> _PushedImage:
        """The config, then the manifest. A manifest refused for a blob it names (deleted since
        it was found, or another process committing it at that moment) has every blob checked
        again with none of this run's knowledge, what is missing placed, and is PUT once more."""
        await self._place_config(placing, layers, self.ledger)
        media_type, manifest = _manifest(placing.image, layers)
        try:
            digest = await self._put_manifest(placing, reference, media_type, manifest)
        except RegistryResponseError as refusal:
            if not manifests.names_unknown_blob(refusal):
                raise manifests.refused(refusal) from refusal
            log.info("manifest refused for a blob it names; checking again", error=str(refusal))
            layers, media_type, manifest = await self._place_again(placing)
            try:
                digest = await self._put_manifest(placing, reference, media_type, manifest)
            except RegistryResponseError as again:
                raise manifests.refused(again) from again
        return _PushedImage(media_type, manifest, digest, layers)

    async def _place_again(self, placing: _Placing) -> tuple[list[LayerResult], str, bytes]:
        """Every blob of the image placed anew, by a ledger that knows nothing yet: each is
        found (HEAD), mounted or sent again. The manifest is built anew from what was placed."""
        fresh = BlobLedger()
        try:
            layers = await self._place_layers(placing, fresh)
        finally:
            await placing.memory.flush()
        await self._place_config(placing, layers, fresh, check_first=True)
        return layers, *_manifest(placing.image, layers)

    async def _place_layers(self, placing: _Placing, ledger: BlobLedger) -> list[LayerResult]:
        uploads = [
            LayerUpload(
                placing.client,
                placing.ref.path,
                placing.ref.name,
                layer,
                layer_id(layer),
                placing.memory,
                ledger,
                self.options,
            )
            for layer in placing.image.layers
        ]
        return await self._upload_layers(uploads, placing.progress)

    async def _place_config(
        self,
        placing: _Placing,
        layers: list[LayerResult],
        ledger: BlobLedger,
        *,
        check_first: bool = False,
    ) -> None:
        image = placing.image
        config = ConfigUpload(
            placing.client,
            placing.ref.path,
            image.config,
            image.config_media_type,
            ledger,
            self.options.retry,
        )
        await config.place(check_first=check_first or worth_checking(layers))

    async def _put_manifest(
        self, placing: _Placing, reference: str, media_type: str, manifest: bytes
    ) -> Digest:
        manifests.check_size(manifest)
        return await self._retrying(
            placing.client.put_manifest, placing.ref.path, reference, media_type, manifest
        )

    async def _retrying(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """A registry request tried again on temporary errors, as the upload policy says."""
        return await retry_call(self.options.retry, call, *args)

    async def _upload_layers(
        self, uploads: Sequence[LayerUpload], progress: ProgressSink
    ) -> list[LayerResult]:
        """Every distinct layer through the transfer manager; results in manifest order."""
        distinct = list({upload.key: upload for upload in uploads}.values())
        # Docker lists the top layer first.
        for upload in reversed(distinct):
            progress(LayerProgress(upload.layer_id, events.PREPARING))
        calls = [partial(self.transfers.transfer, u.key, u, progress) for u in distinct]
        by_key = dict(zip([u.key for u in distinct], await gather(calls), strict=True))
        return [by_key[upload.key] for upload in uploads]


@dataclass(frozen=True)
class _Placing:
    """What placing one image's blobs needs, whichever ledger it goes by."""

    client: RegistryClient
    ref: Reference
    image: Image
    memory: PushMemory
    progress: ProgressSink


@dataclass(frozen=True)
class _PushedImage:
    media_type: str
    manifest: bytes
    digest: Digest
    layers: list[LayerResult]


def _tag(ref: Reference) -> str:
    assert ref.tag is not None, "the caller applies the default tag"
    return ref.tag


def layer_id(layer: Layer) -> str:
    """The 12 hex characters Docker shows for a layer: its diff ID's, else its digest's."""
    if layer.diff_id is not None:
        return layer.diff_id.short
    assert layer.descriptor is not None
    return layer.descriptor.digest.short


def _manifest(image: Image, layers: Sequence[LayerResult]) -> tuple[str, bytes]:
    if image.manifest is not None:
        return image.manifest
    descriptors = [Descriptor(layer.media_type, layer.digest, layer.size) for layer in layers]
    built = manifests.schema2(image.config, image.config_media_type, descriptors)
    return media_types.DOCKER_MANIFEST, built
