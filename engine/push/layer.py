"""One layer's upload (Docker's ``v2PushDescriptor.Upload``): the function a transfer runs.

In order: is it already in the target repository (``HEAD``, when that is worth a round trip: a
record says so, the target holds the image's manifest, or the layer is not small)? → "Layer
already exists". Can it be
mounted from another repository of the registry (placed there earlier in this run, or
remembered in the push metadata)? → "Mounted from …". Otherwise stream one ``PATCH`` of the
(compressed) body into a session — the one a failed mount opened, or a new one — check it is what
the source promised, and ``PUT ?digest=`` to commit. A session that will not be committed is
deleted, shielded from cancellation. It starts no task: the TransferManager runs it in one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from time import monotonic
from typing import TypeVar

from engine import logs
from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.image.base import Layer
from engine.progress import events
from engine.progress.events import LayerProgress, LayerStatus, Measure
from engine.push.candidates import SMALL_LAYER_MAX_SIZE
from engine.push.compression import DEFAULT, Compression
from engine.push.encode import LayerStream
from engine.push.layer_blob import FixedBlob, LayerBlob, ToCompress, layer_blob
from engine.push.ledger import BlobLedger, Placement
from engine.push.metadata_service import Candidates, MetadataService
from engine.push.result import LayerOutcome, LayerResult
from engine.push.upload import SMALL_BLOB_SIZE, BlobSender, UploadOptions, abandon
from engine.reference import parse_normalized_named
from engine.registry.api import RegistryAPI, blob_size
from engine.registry.protocol import Absence, UploadSession
from engine.retry import Attempts, count_down, retrying
from engine.store import V2Metadata
from engine.transfer import TransferContext

log = logs.get_logger("engine.push")

T = TypeVar("T")

#: Seconds between two "Pushing" updates of one layer, its first and last told whatever the
#: time (Docker's progress reader: at most one update per 100 ms). A reading step is 256 KiB of
#: a blob or 1 MiB of a tar: telling each would cost a client of ``hoist serve`` a JSON message,
#: and every renderer a redraw, more often than a terminal can show.
PROGRESS_INTERVAL = 0.1


@dataclass(frozen=True)
class MountCandidate:
    """A repository that may hold the blob, as a mount's ``from``."""

    repository: str  # path within the registry
    digest: Digest
    size: int | None = None
    entry: V2Metadata | None = None  # the metadata that named it, forgotten if the mount fails


@dataclass(frozen=True, kw_only=True)
class LayerUpload:
    client: RegistryAPI
    repository: str  # path within the registry
    target: str  # full name, as the push metadata records it
    layer: Layer
    metadata: MetadataService
    ledger: BlobLedger
    options: UploadOptions = field(default_factory=UploadOptions)
    #: How the layer is compressed if Hoist compresses it.
    compression: Compression = DEFAULT
    #: Placed again after the registry refused a manifest: never joins a transfer that may still
    #: go by the knowledge the refusal disproved.
    again: bool = False
    #: The target holds the manifest the image brings: its blobs are worth a ``HEAD`` each.
    manifest_held: bool = False

    @cached_property
    def blob(self) -> LayerBlob:
        return layer_blob(self.layer, self.compression)

    @cached_property
    def identity(self) -> Digest:
        return identity(self.layer)

    @cached_property
    def attempts(self) -> Attempts:
        """One budget of tries for the layer's whole upload: its checks, mounts and sending."""
        return Attempts(self.options.retry)

    @property
    def key(self) -> str:
        """Dedup key: one upload per layer per target repository (as Docker's ``Key()``)."""
        again = " (again)" if self.again else ""
        return f"{self.client.base}/{self.repository}@{self.blob.key}{again}"

    async def __call__(self, ctx: TransferContext) -> LayerResult:
        # An upload slot is for moving a layer's bytes: the HEADs and mounts before go without.
        ctx.set_inactive()
        waiting = partial(self._say, ctx, LayerStatus.WAITING)
        async with self.ledger.placing(
            self.client.base, self.repository, self.blob.key, on_wait=waiting
        ) as placement:
            if placement.here is not None:
                here = placement.here.blob
                result = self._exists(ctx, self.blob.found(here.digest, here.size))
            else:
                result = await self._place(ctx, placement.elsewhere)
                placement.record(_blob(result))
        made = result.outcome is LayerOutcome.PUSHED
        self.metadata.remember(self.blob, self.target, _blob(result), made=made)
        return result

    async def _place(self, ctx: TransferContext, elsewhere: Placement | None) -> LayerResult:
        candidates = self.metadata.candidates(self.blob, self.target)
        # Placed elsewhere in this run: a mount says "already here" too, in one request; but
        # where a record puts the blob in the target itself (a re-push), Docker's HEAD comes
        # first, so that the layer "already exists" there rather than was mounted again.
        recorded_here = any(check.entry is not None for check in candidates.existence)
        if recorded_here if elsewhere is not None else self._worth_asking(candidates):
            existing = await self._retrying(ctx, partial(self._find_existing, candidates))
            if existing is not None:
                return self._exists(ctx, existing)
        mounts = []
        if elsewhere is not None:
            mounts.append(
                MountCandidate(elsewhere.repository, elsewhere.blob.digest, elsewhere.blob.size)
            )
        mounts += [_mount_candidate(entry) for entry in candidates.mounts]
        mounted, session = await self._retrying(ctx, partial(self._mount, ctx, mounts, candidates))
        if mounted is not None:
            return mounted
        try:
            # Weighed by what it reads: many small layers go at once, big ones a few at a time.
            waiting = partial(self._say, ctx, LayerStatus.WAITING)
            await ctx.wait_started(on_wait=waiting, size=self.layer.size)
        except BaseException:
            # Cancelled while queued: the session a refused mount opened must not stay open.
            if session is not None:
                await abandon(self.client, self.repository, session.location)
            raise
        result = await self._upload(ctx, session)
        ctx.set_inactive()
        self._say(ctx, LayerStatus.PUSHED)
        return result

    def _worth_asking(self, candidates: Candidates) -> bool:
        """Whether to ``HEAD`` before sending. Docker asks only where a record says the blob
        went; Hoist also asks of a digest it knows, so that a re-push without records reads no
        layer: Hoist's own compressor's output (made before, so likely pushed before), or a
        blob its source fixes. For a small fixed blob that nothing points to, that question
        costs about what sending does (Docker's reason to try small layers least), so it is
        sent straight away, unless the target holds the image's manifest (a re-push)."""
        if not candidates.existence:
            return False
        return self.manifest_held if self._hinges_on_manifest(candidates) else True

    @property
    def hinges_on_manifest(self) -> bool:
        """Whether what this layer does first depends on the target holding the image's
        manifest (``manifest_held``): then it must start only once that is known."""
        candidates = self.metadata.candidates(self.blob, self.target)
        return bool(candidates.existence) and self._hinges_on_manifest(candidates)

    def _hinges_on_manifest(self, candidates: Candidates) -> bool:
        # A small blob its source fixes, that no record places anywhere.
        return (
            not isinstance(self.blob, ToCompress)
            and not any(check.entry is not None for check in candidates.existence)
            and self.blob.size <= SMALL_LAYER_MAX_SIZE
        )

    async def _find_existing(self, candidates: Candidates) -> Descriptor | None:
        for check in candidates.existence:
            size = await self.client.head_blob(self.repository, check.digest)
            if isinstance(size, int):
                return self.blob.found(check.digest, size)
            if size is Absence.MISSING and check.entry is not None:
                await self.metadata.forget(check.entry)
        return None

    def _exists(self, ctx: TransferContext, blob: Descriptor) -> LayerResult:
        self._say(ctx, LayerStatus.EXISTS)
        return self._result(blob, LayerOutcome.EXISTS)

    async def _mount(
        self, ctx: TransferContext, mounts: Sequence[MountCandidate], candidates: Candidates
    ) -> tuple[LayerResult | None, UploadSession | None]:
        """Try each candidate; a mounted result, or the upload session the last refusal opened."""
        session: UploadSession | None = None
        try:
            for mount in mounts:
                answer = await self.client.mount_blob(
                    self.repository, mount.digest, mount.repository
                )
                if answer is None:
                    blob = await self._mounted(mount.digest, mount.size)
                    if blob is None:
                        continue  # linked, but its size is not shown: not enough to name it
                    ctx.progress(events.mounted(self.identity, mount.repository))
                    return self._result(blob, LayerOutcome.MOUNTED, mount.repository), None
                if session is not None:
                    await abandon(self.client, self.repository, session.location)
                session = answer
                if mount.entry is not None:
                    await self.metadata.forget(mount.entry)
        except BaseException:
            if session is not None:
                await abandon(self.client, self.repository, session.location)
            raise
        if session is None and candidates.digest is not None:
            # OCI 1.1's anonymous mount: a registry that has the blob anywhere links it here.
            # To the user the registry already had it (no repository to name as the source),
            # and the line and the outcome say the same.
            session = await self.client.mount_blob(self.repository, candidates.digest, None)
            if session is None:
                blob = await self._mounted(candidates.digest, None)
                if blob is not None:
                    return self._exists(ctx, blob), None
        return None, session

    async def _mounted(self, digest: Digest, size: int | None) -> Descriptor | None:
        """A mounted blob as a manifest names it, its size asked of the registry when neither
        the source nor the layer knows it; None when the registry does not show it (the layer
        is then sent as if the mount had been refused)."""
        size = size if size is not None else self.blob.blob_size
        if size is None:
            size = await blob_size(self.client, self.repository, digest)
        return None if size is None else self.blob.found(digest, size)

    async def _upload(self, ctx: TransferContext, session: UploadSession | None) -> LayerResult:
        total = self.layer.size
        # What the stream reads: the blob itself, or the tar it compresses on the way.
        measure = Measure.BLOB if isinstance(self.blob, FixedBlob) else Measure.TAR

        told = 0.0  # when the count was last told: set by the first call, just below

        def on_read(position: int) -> None:
            nonlocal told
            now = monotonic()
            if now - told < PROGRESS_INTERVAL and 0 < position < total:
                return
            told = now
            ctx.progress(events.pushing(self.identity, position, total, measure))

        on_read(0)
        sender = BlobSender(
            self.client,
            self.repository,
            self.attempts,
            partial(self._wait_to_retry, ctx),
            chunk_size=self.options.chunk_size,
        )
        small = self.layer.size <= SMALL_BLOB_SIZE
        stream = LayerStream(self.layer, on_read, self.compression)
        blob = await sender.send(stream, session, small=small)
        return self._result(blob, LayerOutcome.PUSHED, sent=sender.sent)

    async def _wait_to_retry(self, ctx: TransferContext, delay: float) -> None:
        """Docker's "Retrying in N seconds", counting down, without holding an upload slot."""
        held = ctx.started
        ctx.set_inactive()

        def tick(seconds: int) -> None:
            ctx.progress(events.retrying(self.identity, seconds))

        await count_down(delay, tick)
        if held:
            await ctx.wait_started(on_wait=partial(self._say, ctx, LayerStatus.WAITING))

    async def _retrying(self, ctx: TransferContext, step: Callable[[], Awaitable[T]]) -> T:
        """A step of the layer's upload, tried again on temporary errors as the policy says."""
        return await retrying(
            lambda _attempt: step(), self.attempts, sleep=partial(self._wait_to_retry, ctx)
        )

    def _say(self, ctx: TransferContext, status: LayerStatus) -> None:
        ctx.progress(LayerProgress(self.identity, status))

    def _result(
        self, blob: Descriptor, outcome: LayerOutcome, source: str | None = None, sent: int = 0
    ) -> LayerResult:
        return LayerResult(
            blob.digest,
            blob.size,
            blob.media_type,
            outcome,
            diff_id=self.layer.diff_id,
            bytes_sent=sent,
            source=source,
            layer=self.identity,
        )


def identity(layer: Layer) -> Digest:
    """What names a layer in its events and its result: its diff ID, else its blob's digest."""
    if layer.diff_id is not None:
        return layer.diff_id
    assert layer.descriptor is not None, "a source knows a layer's diff ID or its blob"
    return layer.descriptor.digest


def _mount_candidate(entry: V2Metadata) -> MountCandidate:
    return MountCandidate(
        parse_normalized_named(entry.source_repository).path, entry.digest, entry=entry
    )


def _blob(result: LayerResult) -> Descriptor:
    return Descriptor(result.media_type, result.digest, result.size)
