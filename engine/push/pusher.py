"""A push of one tag (Docker's ``pushV2Tag``): an image, or a multi-platform index whose
children go by digest before the index goes by tag. Each image is an ``ImagePush``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

from engine.concurrency import gather
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import RegistryResponseError
from engine.image.base import Image, SourceIndex
from engine.progress.events import Message, ProgressSink, PushComplete
from engine.push import manifest as manifests
from engine.push.candidates import hmac_key
from engine.push.compression import DEFAULT, Compression
from engine.push.image import ImagePush, PushedImage
from engine.push.ledger import BlobLedger
from engine.push.metadata_service import MetadataService
from engine.push.result import LayerResult, PushResult
from engine.push.upload import UploadOptions
from engine.reference import Reference
from engine.registry.api import Registries, RegistryAPI
from engine.retry import retry_call
from engine.store import LayerMetadata, Store
from engine.transfer import TransferManager


@dataclass
class Pusher:
    pool: Registries
    transfers: TransferManager
    store: Store | None = None
    ledger: BlobLedger = field(default_factory=BlobLedger)
    options: UploadOptions = field(default_factory=UploadOptions)
    #: How the layers Hoist compresses are compressed (one per call of the Engine).
    compression: Compression = DEFAULT

    async def push(
        self,
        ref: Reference,
        image: Image,
        progress: ProgressSink,
        known: Mapping[Digest, LayerMetadata] | None = None,
    ) -> PushResult:
        """Push ``image`` as ``ref`` (which carries its tag); ``known``: what the store knows of
        its layers, when the caller read it already."""
        tag = _tag(ref)
        manifests.check_compression(image, self.compression)
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
        manifests.check_index_compression(index, self.compression)
        progress(Message(f"The push refers to repository [{ref.name}]"))
        client = await self.pool.client(ref.domain)

        async def child(descriptor: Descriptor, image: Image) -> list[LayerResult]:
            reference = str(descriptor.digest)
            return (await self._push_image(client, ref, reference, image, progress)).layers

        pushed = await gather([partial(child, d, image) for d, image in index.children])
        try:
            digest = await retry_call(
                self.options.retry, client.put_manifest, ref.path, tag, index.media_type, index.raw
            )
        except RegistryResponseError as refusal:
            raise manifests.refused(refusal) from refusal
        progress(PushComplete(ref.name, tag, digest, len(index.raw)))
        layers = [layer for child_layers in pushed for layer in child_layers]
        return PushResult(ref.name, tag, digest, len(index.raw), index.media_type, layers)

    async def _push_image(
        self,
        client: RegistryAPI,
        ref: Reference,
        reference: str,
        image: Image,
        progress: ProgressSink,
        known: Mapping[Digest, LayerMetadata] | None = None,
    ) -> PushedImage:
        """One image, its manifest PUT as ``reference`` (a tag or its digest)."""
        key = hmac_key(await self.pool.credentials(ref.domain))
        metadata = MetadataService(self.store, key, self.compression)
        await metadata.load(image.layers, known)
        pushing = ImagePush(
            client,
            ref,
            image,
            metadata,
            progress,
            self.transfers,
            self.ledger,
            self.options,
            self.compression,
        )
        return await pushing.run(reference)


def _tag(ref: Reference) -> str:
    assert ref.tag is not None, "the caller applies the default tag"
    return ref.tag
