"""The image config blob (Docker's manifest builder: ``Stat``, then ``Put``, after the layers).

Three things differ from Docker. The config goes through the run's blob ledger like a layer:
when several pushes of one run carry the same image (``push -a``, one image under many names),
one sends it and the others skip it (same repository) or mount it (another one). The ``HEAD`` is
skipped when the registry most likely lacks the config: this push had to upload a layer (a
registry that lacked one of the image's layers holds no manifest naming it, so it has almost
surely never been sent this config either), or it lacks the manifest the image brings; a wrong
guess costs a few KiB sent again rather than a request for every cold push. And an image that
brings its manifest (a layout, an archive) places its config beside its layers, not after them
(``image``): then only the manifest's ``PUT`` follows the last layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import anyio

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.push.layer_blob import blob_key
from engine.push.ledger import BlobLedger
from engine.push.result import LayerOutcome, LayerResult
from engine.push.upload import BlobSender, BytesSource
from engine.registry.api import RegistryAPI, blob_size
from engine.registry.protocol import UploadSession
from engine.retry import Attempts, RetryPolicy, retrying


def worth_checking(layers: Sequence[LayerResult]) -> bool:
    """Whether the registry may already hold the config: no layer of the image had to be sent."""
    return all(layer.outcome is not LayerOutcome.PUSHED for layer in layers)


@dataclass(frozen=True)
class ConfigUpload:
    client: RegistryAPI
    repository: str  # path within the registry
    config: bytes
    media_type: str
    ledger: BlobLedger
    retry: RetryPolicy

    @property
    def blob(self) -> Descriptor:
        return Descriptor(self.media_type, Digest.of(self.config), len(self.config))

    @cached_property
    def attempts(self) -> Attempts:
        """One budget of tries for placing the config, whatever requests that takes."""
        return Attempts(self.retry)

    async def place(self, *, check_first: bool) -> None:
        """Make the repository hold the config: found, mounted or sent."""
        blob = self.blob
        async with self.ledger.placing(
            self.client.base, self.repository, blob_key(blob.digest)
        ) as placement:
            if placement.here is not None:
                return
            if placement.elsewhere is not None:
                await self._mount(blob, placement.elsewhere.repository)
            elif not (check_first and await self._found(blob)):
                await self._send(blob, None)
            placement.record(blob)

    async def _found(self, blob: Descriptor) -> bool:
        size = await retrying(
            lambda _: blob_size(self.client, self.repository, blob.digest), self.attempts
        )
        return size is not None

    async def _send(self, blob: Descriptor, session: UploadSession | None) -> None:
        sender = BlobSender(self.client, self.repository, self.attempts, anyio.sleep)
        await sender.send(BytesSource(blob, self.config), session, small=True)

    async def _mount(self, blob: Descriptor, source: str) -> None:
        """Mount it from the repository this run sent it to; a refusal's session takes the body."""
        session = await retrying(
            lambda _: self.client.mount_blob(self.repository, blob.digest, source), self.attempts
        )
        if session is not None:
            await self._send(blob, session)
