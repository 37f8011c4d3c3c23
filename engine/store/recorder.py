"""Push records on their way to the store: written together when they come together.

A push hands over where its layers went once they are in (``record``). A call that comes while
another one writes waits, then writes everything that gathered meanwhile in one go, as a
database's group commit does: fifty pushes that finish at once rewrite a layer they share once or
twice, not fifty times.

During a batch push (``batched``) pushes finish one after another rather than at once, and each
write of a shared layer's record replaces its file again: on ext4 a replaced file costs far more
than the JSON in it. Within a batch a call therefore writes only when ``every`` seconds have passed
since the last write, and otherwise leaves its records to the next write; whatever is left is
written when the batch ends, before it returns. Records are hints (a lost one costs a ``HEAD`` or a
mount later), so a batch killed outright loses at most the last ``every`` seconds of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")

#: Within a batch, at most one write per this many seconds (and one when the batch ends).
BATCH_WRITE_EVERY = 0.1


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

    async def record(self, records: Iterable[T]) -> None:
        """Keep ``records``; return once they are written, or, in a batch, left to a later write."""
        self._pending.extend(records)
        if self._batches and (self._writing.locked() or self._recently_written()):
            return
        await self._flush()

    @asynccontextmanager
    async def batched(self) -> AsyncIterator[None]:
        """Pushes inside write their records at most every ``every`` seconds; all are written
        when the block is left, however it is left (shielded: a cancelled batch still records)."""
        self._batches += 1
        try:
            yield
        finally:
            self._batches -= 1
            with anyio.CancelScope(shield=True):
                await self._flush()

    def _recently_written(self) -> bool:
        return self._clock() - self._last_write < self._every

    async def _flush(self) -> None:
        async with self._writing:
            group, self._pending = self._pending, []
            if group:
                try:
                    await self._write(group)
                finally:
                    self._last_write = self._clock()
