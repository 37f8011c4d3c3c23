"""One image's blobs and manifest into one repository: the body of Docker's ``pushV2Tag``.

Layers go through the shared TransferManager (one coroutine each, a global upload budget,
dedup); the first failure cancels the others. An image that brings its manifest (a layout, an
archive) asks whether the target holds it, one request that tells a re-push from a first push:
a re-push asks after every blob, a first push sends small blobs unasked. It is asked beside the
layers, and only the layers whose first step hinges on the answer wait for it (small blobs no
record places); the config then goes beside them too (asked after on a re-push, sent unasked on a
first push), so that only the manifest's PUT follows the last layer. An image built here (from
the store) has its config follow the layers, which tell whether it is worth asking after. The
manifest is PUT only once every blob it names is committed. A manifest the
registry refuses for a blob it names has every blob checked again, by a ledger that knows
nothing yet, and is PUT once more. Written for anyio: the layers and the store's write beside
the config and manifest are task groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import anyio

from engine import logs
from engine.concurrency import gather
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import RegistryResponseError
from engine.image.base import Image
from engine.progress.events import LayerProgress, LayerStatus, Message, ProgressSink
from engine.push import manifest as manifests
from engine.push.compression import DEFAULT, Compression
from engine.push.config import ConfigUpload, worth_checking
from engine.push.layer import LayerUpload
from engine.push.ledger import BlobLedger
from engine.push.metadata_service import MetadataService
from engine.push.result import LayerResult
from engine.push.upload import UploadOptions
from engine.reference import Reference
from engine.registry.api import RegistryAPI
from engine.retry import retry_call
from engine.transfer import TransferManager

log = logs.get_logger("engine.push")

#: Said when the registry refused a manifest for a blob it names (deleted meanwhile, or another
#: process committing it at that moment) and every blob is checked again.
MANIFEST_RECHECK = "manifest refused for a blob it names; checking its blobs again"


@dataclass(frozen=True)
class PushedImage:
    media_type: str
    manifest: bytes
    digest: Digest
    layers: list[LayerResult]


@dataclass(frozen=True)
class ImagePush:
    """One image to one repository, by the run's ledger, with the store's metadata of it."""

    client: RegistryAPI
    ref: Reference
    image: Image
    metadata: MetadataService
    progress: ProgressSink
    transfers: TransferManager
    ledger: BlobLedger
    options: UploadOptions
    compression: Compression = DEFAULT

    async def run(self, reference: str) -> PushedImage:
        """Layers and config, then the manifest as ``reference`` (a tag or its digest)."""
        try:
            layers = await self._place_blobs()
        except BaseException:
            await self.metadata.flush()
            raise
        # Where the layers went is written to the store while the config and manifest go: the
        # store's thread is busiest when a batch's pushes finish, and the registry need not wait.
        unrecorded: list[Exception] = []
        pushed: list[PushedImage] = []

        async def record() -> None:
            # Shielded: a push cancelled now (a sibling failed, Ctrl-C) still records its layers.
            with anyio.CancelScope(shield=True):
                try:
                    await self.metadata.flush()
                except Exception as error:
                    unrecorded.append(error)  # raised once the push's own error has not come

        async def complete() -> None:
            pushed.append(await self._complete(reference, layers))

        await gather([record, complete])
        if unrecorded:
            raise unrecorded[0]
        return pushed[0]

    async def _complete(self, reference: str, layers: list[LayerResult]) -> PushedImage:
        """The config, then the manifest. A manifest refused for a blob it names (deleted since
        it was found, or another process committing it at that moment) has every blob checked
        again with none of this run's knowledge, what is missing placed, and is PUT once more."""
        await self._place_config(self.ledger, check_first=worth_checking(layers))
        media_type, manifest = _manifest(self.image, layers, self.compression)
        try:
            digest = await self._put_manifest(reference, media_type, manifest)
        except RegistryResponseError as refusal:
            if not manifests.names_unknown_blob(refusal):
                raise manifests.refused(refusal) from refusal
            log.info("manifest refused for a blob it names; checking again", error=str(refusal))
            self.ledger.disown(self.client.base, self.ref.path)
            self.progress(Message(f"{reference}: {MANIFEST_RECHECK} ({refusal})"))
            layers, media_type, manifest = await self._place_again()
            try:
                digest = await self._put_manifest(reference, media_type, manifest)
            except RegistryResponseError as again:
                raise manifests.refused(again) from again
        return PushedImage(media_type, manifest, digest, layers)

    async def _place_again(self) -> tuple[list[LayerResult], str, bytes]:
        """Every blob of the image placed anew, by a ledger that knows nothing yet: each is
        found (HEAD), mounted or sent again. The manifest is built anew from what was placed."""
        fresh = BlobLedger()
        uploads = self._layer_uploads(fresh, again=True)
        try:
            layers = await self._upload_layers(uploads, self._announce(uploads))
        finally:
            await self.metadata.flush()
        await self._place_config(fresh, check_first=True)
        return layers, *_manifest(self.image, layers, self.compression)

    async def _place_blobs(self) -> list[LayerResult]:
        """Every layer, the question whether the target holds the image's manifest beside them
        (the layers that hinge on it start once it is answered), and on a re-push the config."""
        uploads = self._layer_uploads(self.ledger)
        distinct = self._announce(uploads)
        if self.image.manifest is None:  # built here: no registry holds it yet
            return await self._upload_layers(uploads, distinct)
        waiting = {upload.key for upload in distinct if upload.hinges_on_manifest}
        placed: dict[str, LayerResult] = {}

        async def now() -> None:
            placed.update(await self._transfer([u for u in distinct if u.key not in waiting]))

        async def once_answered() -> None:
            held = await self._manifest_held()
            later = [replace(u, manifest_held=held) for u in distinct if u.key in waiting]

            async def layers() -> None:
                placed.update(await self._transfer(later))

            async def config() -> None:
                # Beside the layers, off the manifest's path: on a re-push the config is most
                # likely there and asked after; on a first push it is sent unasked (a registry
                # without the manifest has most likely never been sent its config either).
                await self._place_config(self.ledger, check_first=held)

            await gather([layers, config])

        await gather([now, once_answered])
        return [placed[upload.key] for upload in uploads]

    def _layer_uploads(self, ledger: BlobLedger, *, again: bool = False) -> list[LayerUpload]:
        return [
            LayerUpload(
                client=self.client,
                repository=self.ref.path,
                target=self.ref.name,
                layer=layer,
                metadata=self.metadata,
                ledger=ledger,
                options=self.options,
                compression=self.compression,
                again=again,
            )
            for layer in self.image.layers
        ]

    async def _manifest_held(self) -> bool:
        """Whether the target already holds the manifest the image brings (a layout's, an
        archive's): then a re-push asks after each blob rather than send a small one unasked.
        One request for the whole image."""
        assert self.image.manifest is not None
        media_type, manifest = self.image.manifest
        return await retry_call(
            self.options.retry,
            self.client.head_manifest,
            self.ref.path,
            Digest.of(manifest),
            media_type,
        )

    async def _place_config(self, ledger: BlobLedger, *, check_first: bool) -> None:
        """Found (``check_first``: asked after before it is sent), mounted or sent; nothing to do
        where this push placed it already (a re-push asks after it beside the layers)."""
        image = self.image
        config = ConfigUpload(
            self.client,
            self.ref.path,
            image.config,
            image.config_media_type,
            ledger,
            self.options.retry,
        )
        await config.place(check_first=check_first)

    async def _put_manifest(self, reference: str, media_type: str, manifest: bytes) -> Digest:
        manifests.check_size(manifest)
        return await retry_call(
            self.options.retry,
            self.client.put_manifest,
            self.ref.path,
            reference,
            media_type,
            manifest,
        )

    def _announce(self, uploads: Sequence[LayerUpload]) -> list[LayerUpload]:
        """Each distinct layer, said to be preparing (Docker lists the top layer first)."""
        distinct = list({upload.key: upload for upload in uploads}.values())
        for upload in reversed(distinct):
            self.progress(LayerProgress(upload.identity, LayerStatus.PREPARING))
        return distinct

    async def _upload_layers(
        self, uploads: Sequence[LayerUpload], distinct: Sequence[LayerUpload]
    ) -> list[LayerResult]:
        """Every distinct layer at once; results in manifest order."""
        by_key = await self._transfer(distinct)
        return [by_key[upload.key] for upload in uploads]

    async def _transfer(self, distinct: Sequence[LayerUpload]) -> dict[str, LayerResult]:
        """Each layer through the transfer manager; its result by its key."""
        calls = [partial(self.transfers.transfer, u.key, u, self.progress) for u in distinct]
        return dict(zip([u.key for u in distinct], await gather(calls), strict=True))


def _manifest(
    image: Image, layers: Sequence[LayerResult], compression: Compression
) -> tuple[str, bytes]:
    if image.manifest is not None:
        return image.manifest
    descriptors = [Descriptor(layer.media_type, layer.digest, layer.size) for layer in layers]
    return manifests.build(image.config, image.config_media_type, descriptors, compression)
