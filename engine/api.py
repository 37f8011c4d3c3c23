"""``Engine``: the library's front door — load, tag, list, remove and push images.

One Engine holds one store, one connection pool and one TransferManager, so every push made
through it shares the upload limit (Docker's ``max-concurrent-uploads``) and the dedup of layers.
Written for asyncio (the caller's loop; a queue of events, a task per ``push_events``); batches
run as a task group (``concurrency.gather``).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import TracebackType

import anyio

from engine import logs
from engine.concurrency import gather
from engine.errors import (
    DigestReferenceError,
    HoistError,
    ImageNotFoundError,
    InvalidReferenceError,
    UnauthorizedError,
    UsageError,
)
from engine.host import host_platform
from engine.image.base import SourceIndex
from engine.progress.events import (
    Message,
    ProgressEvent,
    ProgressSink,
    PushCancelled,
    PushEnded,
    PushFailed,
    discard,
)
from engine.progress.summary import PushSummary
from engine.push.compression import Compression
from engine.push.ledger import BlobLedger, UnderWay
from engine.push.pusher import Pusher
from engine.push.result import LayerOutcome, PushResult
from engine.push.upload import UploadOptions
from engine.reference import (
    DEFAULT_TAG,
    Reference,
    familiar_name,
    familiar_string,
    parse_normalized_named,
)
from engine.registry import login as logins
from engine.registry.api import Registries, RegistryAPI
from engine.registry.auth_config import AuthConfig
from engine.registry.credentials import DockerConfig
from engine.registry.pool import RegistryPool, Timeouts
from engine.retry import RetryPolicy
from engine.settings import DEFAULT_MAX_CONCURRENT_UPLOADS, read_settings
from engine.store import ImageSummary, Store, default_root
from engine.transfer import TransferManager

log = logs.get_logger("engine")

#: Where a push sends its events: a queue (``put_nowait``), a callable, or nowhere.
ProgressTarget = asyncio.Queue[ProgressEvent] | ProgressSink | None


@dataclass
class _Run:
    """What the current ``push`` or ``push_many`` call learnt, which a later call must learn
    anew: a blob it placed may have been deleted since (garbage collection, a repository
    removed), and credentials a relogin refused may have been renewed. A long-lived Engine
    (``hoist serve``) would otherwise answer from stale knowledge."""

    #: The blobs placed: the batch's pushes mount from each other.
    ledger: BlobLedger
    #: Per registry, whether the relogin callback gave credentials: asked once per run.
    relogins: dict[str, bool] = field(default_factory=dict)
    #: The pools seen by pushes with credentials of their own, by registry and credentials: a
    #: batch's pushes to one registry share one client (one ``/v2/`` check, its tokens).
    pinned: dict[tuple[str, AuthConfig], PinnedCredentials] = field(default_factory=dict)

    def pin(self, pool: RegistryPool, domain: str, credentials: AuthConfig) -> PinnedCredentials:
        key = (domain, credentials)
        if key not in self.pinned:
            self.pinned[key] = PinnedCredentials(pool, domain, credentials)
        return self.pinned[key]


#: The run of the task at hand; each task of a batch copies it when it starts.
_current_run: ContextVar[_Run | None] = ContextVar("hoist_run", default=None)


@dataclass(frozen=True)
class BatchItem:
    """One push of a batch: its result, or the error that stopped it."""

    ref: str
    result: PushResult | None = None
    error: HoistError | None = None

    def summary(self) -> PushSummary:
        """Its row in the batch's summary table."""
        if self.result is None:
            return PushSummary(self.ref, error=str(self.error))
        outcomes = [layer.outcome for layer in self.result.layers]
        return PushSummary(
            self.ref,
            str(self.result.digest),
            pushed=outcomes.count(LayerOutcome.PUSHED),
            mounted=outcomes.count(LayerOutcome.MOUNTED),
            exists=outcomes.count(LayerOutcome.EXISTS),
            sent=self.result.bytes_sent,
        )


#: Docker's RegistryAuthenticationPrivilegedFunc: asked, with the registry's domain, for other
#: credentials when a push is refused as unauthorized; None gives up.
Relogin = Callable[[str], Awaitable[AuthConfig | None]]


class Engine:
    """``async with Engine(root) as engine: await engine.push("localhost:5000/app:v1")``."""

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        max_concurrent_uploads: int | None = None,
        insecure_registries: Iterable[str] = (),
        config_dir: Path | str | None = None,
        relogin: Relogin | None = None,
        chunk_size: int | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        """Flags given here add to (insecure registries) or override (uploads) daemon.json."""
        self.store = Store(Path(root) if root is not None else default_root())
        self.relogin = relogin
        self._max_concurrent_uploads = max_concurrent_uploads
        self._insecure_registries = tuple(insecure_registries)
        self._config = _ConfigFile(Path(config_dir) if config_dir is not None else None)
        self._opened = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._relogin_lock = asyncio.Lock()
        # Placements under way in any run: concurrent pushes of one blob send it once.
        self._under_way: UnderWay = {}
        self.transfers = TransferManager(max_concurrent_uploads or DEFAULT_MAX_CONCURRENT_UPLOADS)
        self.pool = RegistryPool(
            insecure_registries=self._insecure_registries,
            # Not a method of the Engine: a pool that pointed back at it would keep a dropped
            # Engine in a cycle, collected in no set order with its connections.
            credentials=self._config.credentials,
            timeouts=timeouts,
        )
        options = UploadOptions(retry=retry or RetryPolicy(), chunk_size=chunk_size)
        self._pusher = Pusher(self.pool, self.transfers, self.store, options=options)

    async def __aenter__(self) -> Engine:
        await self._open()
        return self

    async def _open(self) -> None:
        """Once, before the first operation: read daemon.json, sweep interrupted writes. And at
        every operation: the Engine's connections and locks belong to its first event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise UsageError(
                "this Engine was first used in another event loop: make one Engine per loop "
                "(each asyncio.run() starts a new one)"
            )
        if self._opened:
            return
        settings = await anyio.to_thread.run_sync(read_settings, self.store.root)
        for leftover in await self.store.sweep():
            log.info("removed the leftover of an interrupted write", path=str(leftover))
        self.transfers.concurrency = self._max_concurrent_uploads or settings.max_concurrent_uploads
        self.pool.insecure_registries = settings.insecure_registries + self._insecure_registries
        self.pool.insecure_loopback = settings.insecure_loopback
        self._opened = True

    async def config(self) -> DockerConfig:
        """config.json (``config_dir``, ``$DOCKER_CONFIG`` or ``~/.docker``), read once."""
        return await self._config.read()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the Engine's connections (``async with`` does it on leaving)."""
        await self.pool.close()

    def __del__(self) -> None:
        # An Engine dropped without ``aclose``: one warning that says what to do, instead of
        # aiohttp's about a session and a connector the caller never made.
        if self.pool.close_abandoned():
            warnings.warn(
                "an Engine was never closed: use 'async with Engine(...)' or "
                "'await engine.aclose()'",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    async def _tmp_dir(self) -> Path:
        """Scratch space for decompressed archives, on the store's filesystem."""
        path = self.store.root / "tmp"
        await anyio.Path(path).mkdir(parents=True, exist_ok=True)
        return path

    async def load(self, path: Path | str) -> list[str]:
        """Import every image of an archive or layout; Docker's ``Loaded image…`` lines."""
        await self._open()
        lines: list[str] = []
        from engine.image.detect import open_archive  # tar handling: only loads pay for it

        async with open_archive(Path(path), tmp_dir=await self._tmp_dir()) as archive:
            for found in archive.images:
                # The store keeps one image per name, as Docker's classic store: of an index,
                # the child for this machine's platform.
                image = (
                    found.select_platform(host_platform())
                    if isinstance(found, SourceIndex)
                    else found
                )
                image_id = await self.store.add_image(image)
                refs = _load_names(archive.kind, found.names)
                for ref in refs:
                    await self.store.tag(ref, image_id)
                    lines.append(f"Loaded image: {familiar_string(ref)}")
                if not refs:
                    lines.append(f"Loaded image ID: {image_id}")
        return lines

    async def tag(self, source: str, target: str) -> None:
        """``docker tag``: name an image of the store anew."""
        await self._open()
        named = parse_normalized_named(target)
        if named.digest is not None:
            raise InvalidReferenceError("refusing to create a tag with a digest reference", target)
        image_id = await self.store.resolve(source)
        await self.store.tag(_tagged(named), image_id)

    async def images(self) -> list[ImageSummary]:
        """``docker images``: one row per tag (``<none>`` for an untagged image), newest first."""
        await self._open()
        return await self.store.images()

    async def remove(self, ref: str) -> list[str]:
        """``docker rmi``: untag ``ref``, deleting the image once no name is left; Docker's
        ``Untagged: …`` / ``Deleted: sha256:…`` lines."""
        await self._open()
        return await self.store.remove(ref)

    async def push(
        self,
        ref: str,
        *,
        source: Path | str | None = None,
        platform: str | None = None,
        progress: ProgressTarget = None,
        credentials: AuthConfig | None = None,
        compression: str = "gzip",
        compression_level: int | None = None,
    ) -> PushResult:
        """Push ``ref`` from the store, or straight from an archive or layout at ``source``.

        A multi-platform ``source`` is pushed whole (children, then the index), or only its
        ``platform`` child (``os/arch[/variant]``). ``progress`` is a queue or a callable; its
        last event is always one ``PushEnded``, sent before this returns or raises:
        ``PushComplete``, ``PushFailed`` (the error as ``error``) or ``PushCancelled``. Raises a
        HoistError when the push fails; no manifest is PUT then.

        ``credentials`` (a daemon's ``X-Registry-Auth``; ``AuthConfig()`` is anonymous) serve
        this push alone, instead of config.json's, and no re-login is asked for.

        ``compression`` (``"gzip"`` or ``"zstd"``) and ``compression_level`` (gzip 0–3, default
        2; zstd 1–19, default 3) say how the layers Hoist compresses are compressed; zstd layers
        go in an OCI image manifest (a source whose own manifest is Docker schema 2 refuses
        zstd). A blob the source fixes goes as it is. A bad value is a ``UsageError``.
        """
        sink = _sink(progress)
        batch = _current_run.get()  # a push of push_many's: the batch's run
        current = batch or _Run(BlobLedger(self._under_way))
        run = _current_run.set(current)
        try:
            chosen = Compression.of(compression, compression_level)
            await self._open()
            named = parse_normalized_named(ref)
            if named.digest is not None:
                raise DigestReferenceError()
            if named.tag is None:
                sink(Message(f"Using default tag: {DEFAULT_TAG}"))
                named = named.with_tag(DEFAULT_TAG)
            if credentials is not None:
                pinned = current.pin(self.pool, named.domain, credentials)
                return await self._push(named, source, platform, sink, chosen, pinned)
            try:
                return await self._push(named, source, platform, sink, chosen)
            except UnauthorizedError:
                if not await self._relogin(named.domain):
                    raise
                return await self._push(named, source, platform, sink, chosen)
        except BaseException as exc:
            sink(_ending(ref, exc))
            raise
        finally:
            _current_run.reset(run)
            if batch is None:
                current.ledger.settle()  # its records are written: others find them there

    async def _push(
        self,
        ref: Reference,
        source: Path | str | None,
        platform: str | None,
        sink: ProgressSink,
        compression: Compression,
        registries: Registries | None = None,
    ) -> PushResult:
        pusher = replace(self._pusher, ledger=_run().ledger, compression=compression)
        if registries is not None:
            pusher = replace(pusher, pool=registries)
        if source is None:
            image, known = await self.store.image_to_push(str(ref), compression.compressor)
            return await pusher.push(ref, image, sink, known)
        from engine.image.detect import open_archive

        async with open_archive(Path(source), tmp_dir=await self._tmp_dir()) as archive:
            assert ref.tag is not None
            found = archive.select(ref.tag)
            if not isinstance(found, SourceIndex):
                return await pusher.push(ref, found, sink)
            if platform is not None:
                return await pusher.push(ref, found.select_platform(platform), sink)
            return await pusher.push_index(ref, found, sink)

    async def _relogin(self, domain: str) -> bool:
        """Ask the relogin callback, once per registry and run, for other credentials; whether it
        gave any.

        Concurrent pushes refused by one registry share one prompt.
        """
        if self.relogin is None:
            return False
        answers = _run().relogins
        async with self._relogin_lock:
            if domain not in answers:
                credentials = await self.relogin(domain)
                answers[domain] = credentials is not None
                if credentials is not None:
                    self.pool.use_credentials(domain, credentials)
        return answers[domain]

    async def push_many(
        self,
        refs: Sequence[str],
        *,
        source: Path | str | None = None,
        platform: str | None = None,
        progress: ProgressTarget = None,
        credentials: Mapping[str, AuthConfig] | None = None,
        compression: str = "gzip",
        compression_level: int | None = None,
    ) -> list[BatchItem]:
        """Push every ref at once under the shared upload limit; one push's ``HoistError`` stops
        no other (it is that item's ``error``). Any other exception is a bug or a cancellation:
        it cancels the other pushes and is raised once they have all ended.

        A blob shared by several of them crosses the wire once per registry: the first push
        uploads it, the others mount it from there. Their push records are written in groups,
        all of them before this returns. ``progress`` gets one ``PushEnded`` per ref, each the
        last event of its push. ``credentials`` (a daemon's ``X-Registry-Config``), by registry
        domain: each push uses its registry's as ``push`` does its ``credentials``, anonymous
        where the mapping has none. ``compression`` and ``compression_level``: as for ``push``,
        a bad value raised (a ``UsageError``) before any push starts.
        """
        started = [False] * len(refs)

        async def one(index: int, ref: str) -> BatchItem:
            started[index] = True
            try:
                pushed = await self.push(
                    ref,
                    source=source,
                    platform=platform,
                    progress=progress,
                    credentials=_credentials_of(ref, credentials),
                    compression=compression,
                    compression_level=compression_level,
                )
                return BatchItem(ref, pushed)
            except HoistError as exc:
                return BatchItem(ref, error=exc)

        # The batch's pushes share one run: each task copies this context when it starts.
        current = _Run(BlobLedger(self._under_way))
        run = _current_run.set(current)
        try:
            Compression.of(compression, compression_level)
            async with self.store.batched_records():
                return await gather([partial(one, i, ref) for i, ref in enumerate(refs)])
        except BaseException as exc:
            # A push stopped before it began still ends, so that a watcher counting ends does.
            sink = _sink(progress)
            for ref, went in zip(refs, started, strict=True):
                if not went:
                    sink(_ending(ref, exc))
            raise
        finally:
            _current_run.reset(run)
            current.ledger.settle()  # the batch's records are written: others find them there

    async def tags_of(self, name: str) -> list[str]:
        """``--all-tags``: every tagged reference of the repository ``name`` in the store."""
        named = parse_normalized_named(name)
        if named.tag is not None or named.digest is not None:
            raise InvalidReferenceError("tag can't be used with --all-tags/-a", name)
        tagged = [str(ref) for ref, _ in await self.store.references_by_name(named)]
        if not tagged:
            raise ImageNotFoundError(
                f"An image does not exist locally with the tag: {familiar_name(named)}"
            )
        return tagged

    async def login(
        self, server: str | None, credentials: AuthConfig, *, store: bool = True
    ) -> logins.LoginOutcome:
        """``docker login``: check ``credentials`` against the registry, then store them
        (unless ``store`` is false: a daemon's ``/auth``, whose client keeps them)."""
        await self._open()
        if not store:
            return await logins.check(self.pool, server, credentials)
        return await logins.login(self.pool, await self.config(), server, credentials)

    async def logout(self, server: str | None) -> str:
        """``docker logout``: forget the stored credentials; the domain they were for."""
        return await logins.logout(await self.config(), server)

    async def push_events(
        self, ref: str, *, source: Path | str | None = None
    ) -> AsyncIterator[ProgressEvent]:
        """The push's progress as an async iterator; the push's error is raised at its end.

        The last event is the push's ``PushEnded``. The push runs in a task this iterator owns:
        leaving it early (``break``, or closing it, best with ``contextlib.aclosing``) cancels
        the push and waits for it to end.
        """
        queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        task = asyncio.create_task(
            self.push(ref, source=source, progress=queue), name=f"push {ref}"
        )
        try:
            while True:
                event = await queue.get()
                yield event
                if isinstance(event, PushEnded):
                    break
            await task
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


@dataclass
class PinnedCredentials:
    """The pool seen by the pushes of one run with credentials of their own: a client of their
    own for their domain (its tokens stay with this run), the pool's shared clients for any
    other."""

    pool: RegistryPool
    domain: str
    given: AuthConfig
    _client: RegistryAPI | None = field(default=None, init=False)
    _connecting: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def client(self, domain: str) -> RegistryAPI:
        if domain != self.domain:
            return await self.pool.client(domain)
        async with self._connecting:
            if self._client is None:
                self._client = await self.pool.connect(domain, self.given)
            return self._client

    async def credentials(self, domain: str) -> AuthConfig:
        return self.given if domain == self.domain else await self.pool.credentials(domain)


@dataclass
class _ConfigFile:
    """config.json, read once when first needed."""

    directory: Path | None
    _read: DockerConfig | None = None

    async def read(self) -> DockerConfig:
        if self._read is None:
            self._read = await DockerConfig.load(self.directory)
        return self._read

    async def credentials(self, domain: str) -> AuthConfig:
        return await (await self.read()).get(domain)


def _credentials_of(ref: str, given: Mapping[str, AuthConfig] | None) -> AuthConfig | None:
    """A batch push's own credentials: those ``given`` for its registry; None when none were."""
    if given is None:
        return None
    try:
        domain = parse_normalized_named(ref).domain
    except HoistError:
        return AuthConfig()  # the push refuses the reference itself, as its first step
    return given.get(domain, AuthConfig())


def _run() -> _Run:
    run = _current_run.get()
    assert run is not None, "push and push_many set the run before anything reads it"
    return run


def _sink(progress: ProgressTarget) -> ProgressSink:
    if progress is None:
        return discard
    if isinstance(progress, asyncio.Queue):
        return progress.put_nowait
    return progress


def _ending(ref: str, exc: BaseException) -> PushFailed | PushCancelled:
    """The last event of a push of ``ref`` that ``exc`` ended."""
    if isinstance(exc, Exception):
        return PushFailed(str(exc) or type(exc).__name__, ref, exc)
    return PushCancelled(ref)  # cancelled, or the process interrupted


def _tagged(ref: Reference) -> Reference:
    return ref if ref.tag is not None else ref.with_tag(DEFAULT_TAG)


def _load_names(kind: str, names: Iterable[str]) -> list[Reference]:
    """References to tag a loaded image with.

    An OCI ref name is often a bare tag (``v1``), not an image name: such an image loads
    untagged, as with ``docker load`` of an OCI layout without a full name.
    """
    refs = []
    for name in names:
        if kind != "docker-archive" and "/" not in name and ":" not in name:
            continue
        named = parse_normalized_named(name)
        if named.digest is not None:
            raise InvalidReferenceError("invalid tag: a tag cannot carry a digest", name)
        refs.append(_tagged(named))
    return refs
