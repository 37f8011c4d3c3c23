"""Push records on their way to the store: written together when they come together.

A push hands over where its layers went once they are in (``record``). A call that comes while
another one writes waits, then writes everything that gathered meanwhile in one go, as a
database's group commit does: fifty pushes that finish at once rewrite a layer they share once or
twice, not fifty times.

During a batch push (``batched``) pushes finish one after another rather than at once, and each
write of a shared layer's record replaces its file again: on ext4 a replaced file costs far more
than the JSON in it. A push of a batch therefore writes only when ``every`` seconds have passed
since the last write; otherwise its records wait for a write scheduled for then, and whatever is
still waiting is written when the batch ends, before it returns. Records are hints (a lost one
costs a ``HEAD`` or a mount later): a batch killed outright loses the records of its last
``every`` seconds, and a batch cancelled twice, the second time while it writes its last
records, may lose those. Written for asyncio (a lock, a scheduled write as a task that the
batches under way own); anyio only shields the last write from cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Generic, TypeVar

import anyio

from engine import logs

log = logs.get_logger("engine.store")

T = TypeVar("T")

#: Within a batch, at most one write per this many seconds (and one when the batch ends).
BATCH_WRITE_EVERY = 0.1

#: Whether the running task pushes as part of a batch. Per task, not per store: a push beside a
#: batch still returns only once its records are written.
_in_batch: ContextVar[bool] = ContextVar("hoist_push_in_batch", default=False)


class Recorder(Generic[T]):
    """Gathers records and hands them to ``write`` in groups, one write at a time."""

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        every: float = BATCH_WRITE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._every = every
        self._clock = clock
        self._pending: list[T] = []
        self._writing = asyncio.Lock()
        self._batches = 0
        self._last_write = float("-inf")
        self._scheduled: asyncio.Task[None] | None = None

    async def record(self, records: Iterable[T]) -> None:
        """Keep ``records``; return once they are written, or, in a batch, once a write of them
        is due within ``every`` seconds."""
        self._pending.extend(records)
        if _in_batch.get() and (self._writing.locked() or self._since_last_write() < self._every):
            self._schedule()
            return
        await self._flush()

    @asynccontextmanager
    async def batched(self) -> AsyncIterator[None]:
        """The pushes started inside (tasks inherit it) write their records at most every
        ``every`` seconds; all are written when the block is left, however it is left."""
        self._batches += 1
        token = _in_batch.set(True)
        try:
            yield
        finally:
            _in_batch.reset(token)
            self._batches -= 1
            with anyio.CancelScope(shield=True):
                if not self._batches:
                    await self._unschedule()
                await self._flush()

    def _since_last_write(self) -> float:
        return self._clock() - self._last_write

    def _schedule(self) -> None:
        if self._scheduled is None or self._scheduled.done():
            delay = max(0.0, self._every - self._since_last_write())
            # Owned by the batches under way: the last to end cancels it and writes what it
            # waited for (no one task group spans them: concurrent batches are other tasks).
            self._scheduled = asyncio.create_task(self._flush_after(delay), name="push records")

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self._flush()
        except Exception as exc:  # nobody awaits this write: say what went wrong, once
            log.error("push records not written", error=str(exc) or type(exc).__name__)

    async def _unschedule(self) -> None:
        scheduled, self._scheduled = self._scheduled, None
        if scheduled is not None:
            scheduled.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduled

    async def _flush(self) -> None:
        async with self._writing:
            group, self._pending = self._pending, []
            if not group:
                return
            try:
                await self._write(group)
            except asyncio.CancelledError:
                # Perhaps not written: kept for the next write (the batch's last one, say).
                # Writing a record twice is harmless; losing one is not.
                self._pending[:0] = group
                raise
            finally:
                self._last_write = self._clock()
