"""The image config blob, after the layers (Docker's manifest builder: ``Stat``, then ``Put``).

Two things differ from Docker. The config goes through the run's blob ledger like a layer: when
several pushes of one run carry the same image (``push -a``, one image under many names), one
sends it and the others skip it (same repository) or mount it (another one). And the ``HEAD``
is skipped when this push had to upload a layer: a registry that lacked one of the image's
layers holds no manifest naming it, so it has almost surely never been sent this config either,
and a wrong guess costs a few KiB sent again rather than a request for every cold push.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.push.layer_blob import blob_key
from engine.push.ledger import BlobLedger
from engine.push.result import LayerOutcome, LayerResult
from engine.push.upload import abandon
from engine.registry.client import RegistryClient
from engine.retry import RetryPolicy, retry_call


def worth_checking(layers: Sequence[LayerResult]) -> bool:
    """Whether the registry may already hold the config: no layer of the image had to be sent."""
    return all(layer.outcome is not LayerOutcome.PUSHED for layer in layers)


@dataclass(frozen=True)
class ConfigUpload:
    client: RegistryClient
    repository: str  # path within the registry
    config: bytes
    media_type: str
    ledger: BlobLedger
    retry: RetryPolicy

    @property
    def blob(self) -> Descriptor:
        return Descriptor(self.media_type, Digest.of(self.config), len(self.config))

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
                await self._send(blob)
            placement.record(blob)

    async def _found(self, blob: Descriptor) -> bool:
        size = await retry_call(self.retry, self.client.check_blob, self.repository, blob.digest)
        return size is not None

    async def _send(self, blob: Descriptor) -> None:
        await retry_call(
            self.retry, self.client.put_blob, self.repository, blob.digest, self.config
        )

    async def _mount(self, blob: Descriptor, source: str) -> None:
        """Mount it from the repository this run sent it to; a refusal's session takes the body.

        That session is tried once: after a failed PUT its state is unknown, so it is deleted
        and the config sent afresh (a few KiB), with the usual retries.
        """
        session = await retry_call(
            self.retry, self.client.mount_blob, self.repository, blob.digest, source
        )
        if session is None:
            return
        location = session.location
        try:
            await self.client.commit_blob(self.repository, location, blob.digest, self.config)
        except Exception:
            await abandon(self.client, self.repository, location)
            await self._send(blob)
        except BaseException:
            await abandon(self.client, self.repository, location)
            raise
