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

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.image.base import Layer
from engine.push import candidates
from engine.push.compression import DEFAULT, Compression
from engine.push.layer_blob import LayerBlob, ToCompress
from engine.store import LayerMetadata, MetadataUpdate, Store, V2Metadata, compute_hmac


@dataclass(frozen=True)
class ExistenceCandidate:
    """A digest to ``HEAD`` in the target repository."""

    digest: Digest
    #: The V2Metadata that placed it in the target itself: wrong, and forgotten, if the target
    #: lacks it. (One of another repository says nothing when the target lacks the blob.)
    entry: V2Metadata | None = None


@dataclass(frozen=True)
class Candidates:
    """Everything known of one layer before its upload."""

    #: Digests to HEAD in the target repository, most promising first.
    existence: tuple[ExistenceCandidate, ...]
    #: Where else in this registry the blob may be mounted from, in Docker's order.
    mounts: tuple[V2Metadata, ...]
    #: The blob's digest when it is known but no repository is (for an anonymous mount).
    digest: Digest | None


@dataclass
class MetadataService:
    """Docker's V2MetadataService for one image push, made with one set of credentials.

    Read once per image before its layers go (``load``), written once after (``flush``): two
    worker-thread calls per image instead of several per layer. What it offers a layer is what
    its kind lets count (``LayerBlob.locations``): a fixed blob hears only of its own digest.
    """

    store: Store | None
    hmac_key: bytes
    #: What the push compresses with: the store keeps what each compressor made apart.
    compression: Compression = DEFAULT
    _known: dict[Digest, LayerMetadata] = field(default_factory=dict)
    _pending: list[MetadataUpdate] = field(default_factory=list)
    _forgotten: set[V2Metadata] = field(default_factory=set)

    async def load(
        self, layers: Sequence[Layer], known: Mapping[Digest, LayerMetadata] | None = None
    ) -> None:
        """What the store knows of ``layers``: ``known``, when the caller read it already."""
        diff_ids = [layer.diff_id for layer in layers if layer.diff_id is not None]
        if known is None and self.store is not None and diff_ids:
            known = await self.store.layer_metadata(diff_ids, self.compression.compressor)
        self._known.update(known or {})

    def candidates(self, blob: LayerBlob, target: str) -> Candidates:
        layer = self._known.get(blob.diff_id) if blob.diff_id else None
        # What Hoist's compressor made of the tar before: the digest both kinds weigh.
        own = layer.compressed.digest if layer and layer.compressed else None
        metadata = blob.locations(self._metadata(layer), own)
        known = blob.known_digest(own)
        effort = candidates.effort_for(blob.size)
        existence = [
            ExistenceCandidate(entry.digest, entry if entry.source_repository == target else None)
            for entry in candidates.existence_candidates(
                target,
                metadata,
                effort.existence_checks,
                effort.check_other_repositories,
                key=self.hmac_key,
            )
        ]
        if known is not None:  # the most promising digest: first, with any record naming it
            entry = next((check.entry for check in existence if check.digest == known), None)
            rest = (c for c in existence if c.digest != known)
            existence = [ExistenceCandidate(known, entry), *rest]
        mounts = candidates.mount_candidates(target, self.hmac_key, metadata, effort.mounts)
        return Candidates(tuple(existence), tuple(mounts), known)

    def remember(self, blob: LayerBlob, target: str, placed: Descriptor, *, made: bool) -> None:
        """The layer is now in ``target`` as ``placed`` (Docker's ``TagAndAdd``); kept to flush.

        ``made``: Hoist's compressor made ``placed`` (it was sent), so it is also recorded as the
        tar's compressed form; a blob found or mounted may be another tool's. The record keeps
        the blob's media type: a layer Hoist compresses may only reuse a blob of the algorithm
        its push asks for.
        """
        if self.store is None or blob.diff_id is None:
            return
        entry = V2Metadata(
            digest=placed.digest,
            source_repository=target,
            hmac=compute_hmac(self.hmac_key, placed.digest, target) if self.hmac_key else "",
            media_type=placed.media_type,
        )
        compressed = placed if made and isinstance(blob, ToCompress) else None
        self._pending.append(MetadataUpdate(blob.diff_id, entry, compressed))
        # Known from now on to this push too: a manifest refused for one of its blobs has each
        # checked again (HEAD) before anything is sent anew.
        before = self._known.get(blob.diff_id)
        self._known[blob.diff_id] = LayerMetadata(
            [*(before.metadata if before else ()), entry],
            compressed or (before.compressed if before else None),
        )

    async def flush(self) -> None:
        """Write what ``remember`` kept; shielded, so a cancelled push still records its layers."""
        pending, self._pending = self._pending, []
        if self.store is not None and pending:
            with anyio.CancelScope(shield=True):
                await self.store.record_pushes(pending, self.compression.compressor)

    async def forget(self, entry: V2Metadata) -> None:
        """``entry`` turned out wrong (a mount from it failed, its own repository lacks the
        blob): the blob is not there any more."""
        self._forgotten.add(entry)  # later layers of this push must not try it again either
        if self.store is not None:
            await self.store.remove_v2_metadata(entry)

    def _metadata(self, layer: LayerMetadata | None) -> list[V2Metadata]:
        if layer is None:
            return []
        return [entry for entry in layer.metadata if entry not in self._forgotten]
