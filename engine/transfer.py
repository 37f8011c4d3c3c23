"""The transfer manager: one task per layer, deduplicated by key, under one shared slot limit.

It plays the part of Docker's ``distribution/xfer`` transfer manager. A transfer is keyed: a
second request for a key that is running attaches as a *watcher*, receives the last progress event
and every later one, and gets the same result or exception. A transfer is a flight
(``engine.concurrency.SingleFlight``): any watcher may leave; when the last one leaves, the task is
cancelled and that watcher waits for it to end, so that nothing outlives the push that asked for
it. Written for asyncio: slots are asyncio events.

Slots are claimed when a transfer is created and granted first come, first served, while fewer
than ``concurrency`` transfers hold one. The transfer's function decides when to wait for its slot
(``TransferContext.wait_started``) and may give it back while idle (``set_inactive``), for
instance while sleeping before a retry, then queue again (``wait_started``).
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar, cast

from engine import logs
from engine.concurrency import Flight, SingleFlight
from engine.progress.events import ProgressEvent, ProgressSink

__all__ = ["TransferContext", "TransferManager"]

T = TypeVar("T")

log = logs.get_logger(__name__)


class _ClaimState(enum.Enum):
    IDLE = enum.auto()
    QUEUED = enum.auto()
    HELD = enum.auto()


class _Claim:
    """One transfer's claim on a slot; ``granted`` is set exactly while the slot is held."""

    __slots__ = ("granted", "state")

    def __init__(self) -> None:
        self.state = _ClaimState.IDLE
        self.granted = asyncio.Event()


class _Slots:
    """A first-come, first-served limit on how many claims are held at once."""

    def __init__(self, limit: int) -> None:
        self._limit = _checked_limit(limit)
        self._held = 0
        # Ordered for first come, first served; a dict so that leaving the queue costs O(1).
        self._queue: OrderedDict[_Claim, None] = OrderedDict()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, limit: int) -> None:
        # Lowering the limit preempts nobody: holders keep their slots until they let go.
        self._limit = _checked_limit(limit)
        self._grant()

    @property
    def held(self) -> int:
        return self._held

    def request(self, claim: _Claim) -> None:
        if claim.state is not _ClaimState.IDLE:
            return
        claim.state = _ClaimState.QUEUED
        self._queue[claim] = None
        self._grant()

    def release(self, claim: _Claim) -> None:
        if claim.state is _ClaimState.HELD:
            self._held -= 1
            claim.granted.clear()
        elif claim.state is _ClaimState.QUEUED:
            del self._queue[claim]
        claim.state = _ClaimState.IDLE
        self._grant()

    def _grant(self) -> None:
        while self._queue and self._held < self._limit:
            claim, _ = self._queue.popitem(last=False)
            claim.state = _ClaimState.HELD
            claim.granted.set()
            self._held += 1


def _checked_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"concurrency must be at least 1, not {limit}")
    return limit


class _Watcher:
    """Someone awaiting a transfer; ``sink`` becomes ``None`` once it has raised."""

    __slots__ = ("sink",)

    def __init__(self, sink: ProgressSink) -> None:
        self.sink: ProgressSink | None = sink


class _Broadcast:
    """A transfer's watchers and the last progress event they were sent."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._watchers: list[_Watcher] = []
        self._last: ProgressEvent | None = None

    def watch(self, sink: ProgressSink) -> _Watcher:
        watcher = _Watcher(sink)
        self._watchers.append(watcher)
        if self._last is not None:
            self._deliver(watcher, self._last)
        return watcher

    def release(self, watcher: _Watcher) -> None:
        self._watchers.remove(watcher)

    def send(self, event: ProgressEvent) -> None:
        self._last = event
        for watcher in tuple(self._watchers):
            self._deliver(watcher, event)

    def _deliver(self, watcher: _Watcher, event: ProgressEvent) -> None:
        if watcher.sink is None:
            return
        try:
            watcher.sink(event)
        except Exception:
            # One broken renderer must not fail a layer that other watchers still want.
            log.warning("progress sink failed; dropping it", key=self._key, exc_info=True)
            watcher.sink = None


class TransferContext:
    """What a transfer function gets: its key, its progress broadcast and its slot."""

    def __init__(self, key: str, slots: _Slots, broadcast: _Broadcast) -> None:
        self.key = key
        self._slots = slots
        self._broadcast = broadcast
        self._claim = _Claim()
        # Queued now, not when func first waits, so that slots go out in request order.
        slots.request(self._claim)

    def progress(self, event: ProgressEvent) -> None:
        """Send ``event`` to every current watcher; later watchers receive it first."""
        self._broadcast.send(event)

    @property
    def started(self) -> bool:
        """Whether this transfer holds a slot now."""
        return self._claim.state is _ClaimState.HELD

    async def wait_started(self, on_wait: Callable[[], None] | None = None) -> None:
        """Wait until this transfer holds a slot, queueing for one if it is not queued yet (at
        the back, after ``set_inactive``): the one way to take a slot. ``on_wait`` is told when
        no slot is free at once, so that "Waiting" is said only of a layer that waits."""
        self._slots.request(self._claim)
        if not self._claim.granted.is_set() and on_wait is not None:
            on_wait()
        await self._claim.granted.wait()

    def set_inactive(self) -> None:
        """Give the slot back (or leave the queue) while the transfer moves no data."""
        self._slots.release(self._claim)


class _Transfer(Flight[Any]):
    """A running transfer: a flight with its slot claim and its watchers' progress."""

    def __init__(
        self,
        context: TransferContext,
        broadcast: _Broadcast,
        func: Callable[[TransferContext], Awaitable[Any]],
    ) -> None:
        self.context = context
        self.broadcast = broadcast
        super().__init__(_run(context, func), name=f"transfer {context.key}")
        # Also covers a task cancelled before its coroutine ever ran, whose finally never runs.
        self.task.add_done_callback(lambda _: context.set_inactive())


async def _run(context: TransferContext, func: Callable[[TransferContext], Awaitable[T]]) -> T:
    try:
        return await func(context)
    finally:
        # Free the slot as soon as func ends, before any watcher wakes.
        context.set_inactive()


class TransferManager:
    """Runs keyed transfers, one task each, at most ``concurrency`` holding a slot at once."""

    def __init__(self, concurrency: int = 5) -> None:
        self._slots = _Slots(concurrency)
        self._flights: SingleFlight[str, _Transfer] = SingleFlight()

    @property
    def concurrency(self) -> int:
        return self._slots.limit

    @concurrency.setter
    def concurrency(self, concurrency: int) -> None:
        self._slots.limit = concurrency

    def active(self) -> int:
        """How many transfers hold a slot now."""
        return self._slots.held

    async def transfer(
        self,
        key: str,
        func: Callable[[TransferContext], Awaitable[T]],
        progress: ProgressSink,
    ) -> T:
        """Run ``func`` for ``key``, or attach to the run already under way, and return its result.

        ``progress`` receives the transfer's last event, if any, then every later one. Cancelling
        the caller detaches it; the last caller to detach cancels the transfer.
        """
        transfer = await self._flights.join(key, partial(self._start, key, func))
        watcher = transfer.broadcast.watch(progress)
        try:
            return cast(T, await transfer.result())
        finally:
            transfer.broadcast.release(watcher)

    def _start(self, key: str, func: Callable[[TransferContext], Awaitable[Any]]) -> _Transfer:
        broadcast = _Broadcast(key)
        return _Transfer(TransferContext(key, self._slots, broadcast), broadcast, func)
