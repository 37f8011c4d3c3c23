"""One tag of one image to one repository (Docker's ``pushV2Tag``).

Layers go through the shared TransferManager (one coroutine each, a global slot limit, dedup);
the first failure cancels the others. The config follows, and the manifest is PUT only once
every blob it names is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from engine.concurrency import gather
from engine.digest import Digest
from engine.image import media_types
from engine.image.base import Descriptor, Image, Layer
from engine.progress import events
from engine.progress.events import LayerProgress, Message, ProgressSink, PushComplete
from engine.push import manifest as manifests
from engine.push.layer import LayerUpload
from engine.push.result import LayerResult, PushResult
from engine.reference import Reference
from engine.registry.client import RegistryClient
from engine.registry.pool import RegistryPool
from engine.store import Store, V2Metadata
from engine.transfer import TransferManager

#: How many remembered digests of one layer are worth a HEAD before uploading it anyway.
MAX_EXISTENCE_CHECKS = 3


@dataclass
class Pusher:
    pool: RegistryPool
    transfers: TransferManager
    store: Store | None = None

    async def push(self, ref: Reference, image: Image, progress: ProgressSink) -> PushResult:
        """Push ``image`` as ``ref`` (which carries its tag)."""
        assert ref.tag is not None, "the caller applies the default tag"
        progress(Message(f"The push refers to repository [{ref.name}]"))
        client = await self.pool.client(ref.domain)
        # One request before the concurrent uploads: it fetches the push token they all share.
        config_present = await client.check_blob(ref.path, Digest.of(image.config)) is not None
        uploads = [await self._layer_upload(client, ref, layer) for layer in image.layers]
        layers = await self._upload_layers(uploads, progress)
        if not config_present:
            await client.put_blob(ref.path, Digest.of(image.config), image.config)
        media_type, manifest = _manifest(image, layers)
        manifests.check_size(manifest)
        digest = await client.put_manifest(ref.path, ref.tag, media_type, manifest)
        await self._remember(ref, layers)
        progress(PushComplete(ref.name, ref.tag, digest, len(manifest)))
        return PushResult(ref.name, ref.tag, digest, len(manifest), media_type, layers)

    async def _layer_upload(
        self, client: RegistryClient, ref: Reference, layer: Layer
    ) -> LayerUpload:
        return LayerUpload(
            client=client,
            repository=ref.path,
            layer=layer,
            layer_id=layer_id(layer),
            known_digests=await self._known_digests(layer),
        )

    async def _known_digests(self, layer: Layer) -> list[Digest]:
        if layer.descriptor is not None:
            return [layer.descriptor.digest]
        if self.store is None or layer.diff_id is None:
            return []
        remembered = await self.store.v2_metadata(layer.diff_id)
        newest_first = list(dict.fromkeys(m.digest for m in reversed(remembered)))
        return newest_first[:MAX_EXISTENCE_CHECKS]

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

    async def _remember(self, ref: Reference, layers: Sequence[LayerResult]) -> None:
        """Record which compressed digest each diff ID has in this repository."""
        if self.store is None:
            return
        for layer in layers:
            if layer.diff_id is not None:
                entry = V2Metadata(digest=layer.digest, source_repository=ref.name)
                await self.store.add_v2_metadata(layer.diff_id, entry)


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
