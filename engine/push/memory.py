"""What a push knows about a layer before sending it, and what it remembers after.

Docker's ``v2MetadataService`` seen from one push: which digests to ``HEAD`` in the target
repository, which other repositories of the registry to mount from (in Docker's order, with its
HMAC of the credentials), and, once the layer is in, where it now is. Hoist also remembers what
its own deterministic compressor made of the layer, so that even with the push metadata gone
the digest is known without compressing again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from engine.digest import Digest
from engine.image.base import Descriptor, Layer
from engine.push import candidates
from engine.push.encode import COMPRESSOR
from engine.store import Knowledge, PushRecord, Store, V2Metadata, compute_hmac


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
    """The store's knowledge, for pushes made with one set of credentials.

    Read once per image before its layers go (``load``), written once after (``flush``): two
    worker-thread calls per image instead of several per layer.
    """

    store: Store | None
    hmac_key: bytes
    _known: dict[Digest, Knowledge] = field(default_factory=dict)
    _pending: list[PushRecord] = field(default_factory=list)

    async def load(
        self, layers: Sequence[Layer], known: Mapping[Digest, Knowledge] | None = None
    ) -> None:
        """What the store knows of ``layers``: ``known``, when the caller read it already."""
        diff_ids = [layer.diff_id for layer in layers if layer.diff_id is not None]
        if known is None and self.store is not None and diff_ids:
            known = await self.store.push_knowledge(diff_ids, COMPRESSOR)
        self._known.update(known or {})

    def prior(self, layer: Layer, target: str) -> Prior:
        knowledge = self._known.get(layer.diff_id) if layer.diff_id else None
        metadata = knowledge.metadata if knowledge else []
        compressed = knowledge.compressed if knowledge else None
        known = _own_digest(layer) or (compressed.digest if compressed else None)
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

    def remember(self, layer: Layer, target: str, blob: Descriptor) -> None:
        """The layer is now in ``target`` as ``blob`` (Docker's ``TagAndAdd``); kept to flush."""
        if self.store is None or layer.diff_id is None:
            return
        entry = V2Metadata(
            digest=blob.digest,
            source_repository=target,
            hmac=compute_hmac(self.hmac_key, blob.digest, target) if self.hmac_key else "",
        )
        compressed = blob if layer.descriptor is None else None
        self._pending.append(PushRecord(layer.diff_id, entry, compressed))

    async def flush(self) -> None:
        """Write what ``remember`` kept; shielded, so a cancelled push still records its layers."""
        pending, self._pending = self._pending, []
        if self.store is not None and pending:
            with anyio.CancelScope(shield=True):
                await self.store.record_pushes(pending, COMPRESSOR)

    async def forget(self, layer: Layer, entry: V2Metadata) -> None:
        """A mount from ``entry`` failed: the blob is not there (any more)."""
        if self.store is not None:
            await self.store.remove_v2_metadata(entry)


def _own_digest(layer: Layer) -> Digest | None:
    return layer.descriptor.digest if layer.descriptor is not None else None
