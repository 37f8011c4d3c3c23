"""What a push knows about a layer before sending it, and what it remembers after.

Docker's ``v2MetadataService`` seen from one push: which digests to ``HEAD`` in the target
repository, which other repositories of the registry to mount from (in Docker's order, with its
HMAC of the credentials), and, once the layer is in, where it now is. Hoist also remembers what
its own deterministic compressor made of the layer, so that even with the push metadata gone
the digest is known without compressing again.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from engine.digest import Digest
from engine.errors import StoreError
from engine.image.base import Descriptor, Layer
from engine.push import candidates
from engine.push.encode import COMPRESSOR
from engine.store import Store, V2Metadata, compute_hmac

log = structlog.get_logger("engine.push")


@dataclass(frozen=True)
class Prior:
    """Everything known of one layer before its upload."""

    #: Digests to HEAD in the target repository, most promising first.
    existence: tuple[Digest, ...]
    #: Where else in this registry the blob may be mounted from, in Docker's order.
    mounts: tuple[V2Metadata, ...]
    #: The blob's digest when it is known but no repository is (for an anonymous mount).
    digest: Digest | None


@dataclass
class PushMemory:
    """The store's knowledge, for pushes to ``target`` made with one set of credentials."""

    store: Store | None
    hmac_key: bytes

    async def prior(self, layer: Layer, target: str) -> Prior:
        known = _own_digest(layer) or await self._compressed_digest(layer)
        metadata = await self._metadata(layer)
        attempts = candidates.attempts_for(layer.size)
        existence = [
            entry.digest
            for entry in candidates.existence_candidates(
                target,
                metadata,
                attempts.existence_checks,
                attempts.check_other_repositories,
                key=self.hmac_key,
            )
        ]
        if known is not None:
            existence.insert(0, known)
        mounts = candidates.mount_candidates(target, self.hmac_key, metadata, attempts.mounts)
        return Prior(tuple(dict.fromkeys(existence)), tuple(mounts), known)

    async def _metadata(self, layer: Layer) -> list[V2Metadata]:
        if self.store is None or layer.diff_id is None:
            return []
        try:
            return await self.store.v2_metadata(layer.diff_id)
        except StoreError as exc:
            # Push metadata is a hint (and written without fsync): a damaged file is no record.
            log.warning("push metadata unreadable; ignored", error=str(exc))
            return []

    async def _compressed_digest(self, layer: Layer) -> Digest | None:
        if self.store is None or layer.diff_id is None:
            return None
        try:
            form = await self.store.compressed_form(layer.diff_id, COMPRESSOR)
        except StoreError as exc:
            log.warning("compressed-form record unreadable; ignored", error=str(exc))
            return None
        return form.digest if form is not None else None

    async def remember(self, layer: Layer, target: str, blob: Descriptor) -> None:
        """The layer is now in ``target`` as ``blob``: record it (Docker's ``TagAndAdd``)."""
        if self.store is None or layer.diff_id is None:
            return
        entry = V2Metadata(
            digest=blob.digest,
            source_repository=target,
            hmac=compute_hmac(self.hmac_key, blob.digest, target) if self.hmac_key else "",
        )
        await self.store.add_v2_metadata(layer.diff_id, entry)
        if layer.descriptor is None:
            await self.store.record_compressed_form(layer.diff_id, COMPRESSOR, blob)

    async def forget(self, layer: Layer, entry: V2Metadata) -> None:
        """A mount from ``entry`` failed: the blob is not there (any more)."""
        if self.store is not None:
            await self.store.remove_v2_metadata(entry)


def _own_digest(layer: Layer) -> Digest | None:
    return layer.descriptor.digest if layer.descriptor is not None else None
