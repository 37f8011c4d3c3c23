"""One layer's upload (Docker's ``v2PushDescriptor.Upload``): the function a transfer runs.

already there? → "Layer already exists"; else POST a session, stream one PATCH of the
(compressed) body, check it is what the source promised, ``PUT ?digest=`` to commit.
A session that will not be committed is deleted, shielded from cancellation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import structlog

from engine.digest import Digest
from engine.image import media_types
from engine.image.base import Layer
from engine.progress import events
from engine.progress.events import LayerProgress
from engine.push.encode import LayerStream
from engine.push.result import LayerOutcome, LayerResult
from engine.registry.client import RegistryClient
from engine.transfer import TransferContext

log = structlog.get_logger("engine.push")


@dataclass(frozen=True)
class LayerUpload:
    """Everything one layer's upload needs; ``known_digests`` come from the source or metadata."""

    client: RegistryClient
    repository: str  # path within the registry
    layer: Layer
    layer_id: str  # the short ID shown in progress
    known_digests: Sequence[Digest] = ()

    @property
    def key(self) -> str:
        """Dedup key: one upload per layer per target repository (as Docker's ``Key()``)."""
        layer = self.layer
        content = layer.descriptor.digest if layer.descriptor else layer.diff_id
        return f"{self.client.base}/{self.repository}@{content or id(layer)}"

    async def __call__(self, ctx: TransferContext) -> LayerResult:
        if not ctx.started:
            ctx.progress(LayerProgress(self.layer_id, events.WAITING))
            await ctx.wait_started()
        existing = await self._find_existing()
        if existing is not None:
            ctx.progress(LayerProgress(self.layer_id, events.LAYER_EXISTS))
            return existing
        result = await self._upload(ctx)
        ctx.progress(LayerProgress(self.layer_id, events.PUSHED))
        return result

    async def _find_existing(self) -> LayerResult | None:
        for digest in self.known_digests:
            size = await self.client.check_blob(self.repository, digest)
            if size is not None:
                descriptor = self.layer.descriptor
                media_type = descriptor.media_type if descriptor else media_types.DOCKER_LAYER_GZIP
                return LayerResult(
                    digest, size, media_type, LayerOutcome.EXISTS, diff_id=self.layer.diff_id
                )
        return None

    async def _upload(self, ctx: TransferContext) -> LayerResult:
        total = self.layer.size

        def on_read(position: int) -> None:
            ctx.progress(LayerProgress(self.layer_id, events.PUSHING, position, total))

        on_read(0)
        location = await self.client.initiate_upload(self.repository)
        try:
            stream = LayerStream(self.layer, on_read)
            location = await self.client.patch_blob(self.repository, location, stream)
            descriptor = stream.descriptor()
            await self.client.commit_blob(self.repository, location, descriptor.digest)
        except BaseException:
            await self._abandon(location)
            raise
        return LayerResult(
            descriptor.digest,
            descriptor.size,
            descriptor.media_type,
            LayerOutcome.PUSHED,
            diff_id=self.layer.diff_id,
            bytes_sent=stream.size,
        )

    async def _abandon(self, location: str) -> None:
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(5):
                    await self.client.cancel_upload(self.repository, location)
            except Exception as exc:  # the push already failed; this is best effort
                log.debug("upload not deleted", location=location, error=str(exc))
