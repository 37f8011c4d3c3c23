"""The transfer manager: one task per layer, deduplicated by key, under one shared upload budget.

It plays the part of Docker's ``distribution/xfer`` transfer manager. A transfer is keyed: a
second request for a key that is running attaches as a *watcher*, receives the last progress event
and every later one, and gets the same result or exception. A transfer is a flight
(``engine.concurrency.SingleFlight``): any watcher may leave; when the last one leaves, the task is
cancelled and that watcher waits for it to end, so that nothing outlives the push that asked for
it. Written for asyncio: slots are asyncio events.

Docker's limit is a count of layers (``max-concurrent-uploads``, 5). For big layers that is the
right measure: five streams fill the link. For small ones it is not: a 16 KiB layer costs its round
trips, not its bytes, and five at a time spend the push waiting on latency. So the limit is on
bytes in flight: ``concurrency`` slots of ``slot_bytes`` each. A layer of ``slot_bytes`` or more
(or of unknown size) takes a whole slot, as in Docker; a smaller one takes the share its size
says, so many small layers go at once, up to ``max_parallel`` transfers (the pool's
connections).

Slots are claimed when a transfer is created and granted first come, first served (a big layer at
the head of the queue is not overtaken by smaller ones behind it). The transfer's function decides
when to wait for its slot (``TransferContext.wait_started``, saying how many bytes it will move)
and may give it back while idle (``set_inactive``), for instance while sleeping before a retry,
then queue again (``wait_started``).
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
from engine.settings import CONNECTIONS

__all__ = ["TransferContext", "TransferManager"]

T = TypeVar("T")

log = logs.get_logger(__name__)


class _ClaimState(enum.Enum):
    IDLE = enum.auto()
    QUEUED = enum.auto()
    HELD = enum.auto()


#: Bytes of one slot. The largest blob an upload holds in memory (``upload.SMALL_BLOB_SIZE``)
#: takes a whole one, so the budget keeps those bodies within what Docker's limit allowed; a
#: layer streamed from its file takes a whole one too, so big layers go as in Docker.
SLOT_BYTES = 2 << 20
#: Transfers holding a slot (or a share) at once: as many as the pool has connections.
MAX_PARALLEL = CONNECTIONS


class _Claim:
    """One transfer's claim on the budget; ``granted`` is set exactly while it is held."""

    __slots__ = ("granted", "size", "state", "taken")

    def __init__(self) -> None:
        self.state = _ClaimState.IDLE
        self.granted = asyncio.Event()
        #: Bytes the transfer will move; None (not said yet) counts as a whole slot.
        self.size: int | None = None
        #: Bytes of the budget it holds now.
        self.taken = 0


class _Slots:
    """A first-come, first-served limit on bytes in flight and on transfers at once."""

    def __init__(self, limit: int, slot_bytes: int, max_parallel: int) -> None:
        self._limit = _checked("concurrency", limit)
        self._slot_bytes = _checked("slot size", slot_bytes)
        self._max_parallel = _checked("parallel transfers", max_parallel)
        self._held = 0
        self._held_bytes = 0
        # Ordered for first come, first served; a dict so that leaving the queue costs O(1).
        self._queue: OrderedDict[_Claim, None] = OrderedDict()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, limit: int) -> None:
        # Lowering the limit preempts nobody: holders keep their slots until they let go.
        self._limit = _checked("concurrency", limit)
        self._grant()

    @property
    def held(self) -> int:
        return self._held

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def request(self, claim: _Claim) -> None:
        if claim.state is not _ClaimState.IDLE:
            return
        claim.state = _ClaimState.QUEUED
        self._queue[claim] = None
        self._grant()

    def resize(self, claim: _Claim, size: int) -> None:
        """``claim`` will move ``size`` bytes: weighed by that from now on, held or queued."""
        claim.size = size
        if claim.state is _ClaimState.HELD:
            # A holder that turns out smaller gives back the difference; a bigger one keeps
            # what it holds and takes the rest (holders are never preempted).
            self._held_bytes += self._weight(claim) - claim.taken
            claim.taken = self._weight(claim)
        self._grant()

    def release(self, claim: _Claim) -> None:
        if claim.state is _ClaimState.HELD:
            self._held -= 1
            self._held_bytes -= claim.taken
            claim.taken = 0
            claim.granted.clear()
        elif claim.state is _ClaimState.QUEUED:
            del self._queue[claim]
        claim.state = _ClaimState.IDLE
        self._grant()

    def _weight(self, claim: _Claim) -> int:
        if claim.size is None:
            return self._slot_bytes
        return min(claim.size, self._slot_bytes)

    def _fits(self, claim: _Claim) -> bool:
        budget = self._limit * self._slot_bytes
        return self._held < self._max_parallel and self._held_bytes + self._weight(claim) <= budget

    def _grant(self) -> None:
        while self._queue:
            claim = next(iter(self._queue))
            if not self._fits(claim):
                return
            del self._queue[claim]
            claim.state = _ClaimState.HELD
            claim.granted.set()
            claim.taken = self._weight(claim)
            self._held += 1
            self._held_bytes += claim.taken


def _checked(what: str, limit: int) -> int:
    if limit < 1:
        raise ValueError(f"{what} must be at least 1, not {limit}")
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

    async def wait_started(
        self, on_wait: Callable[[], None] | None = None, *, size: int | None = None
    ) -> None:
        """Wait until this transfer holds a slot, queueing for one if it is not queued yet (at
        the back, after ``set_inactive``): the one way to take a slot. ``on_wait`` is told when
        no slot is free at once, so that "Waiting" is said only of a layer that waits.

        ``size``: the bytes it will move, which weigh its claim from now on (a smaller layer
        takes a share of a slot); until said, a claim weighs a whole slot."""
        if size is not None:
            self._slots.resize(self._claim, size)
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
    """Runs keyed transfers, one task each, at most ``concurrency`` slots of ``slot_bytes`` in
    flight and at most ``max_parallel`` transfers holding a share of one."""

    def __init__(
        self,
        concurrency: int = 5,
        *,
        slot_bytes: int = SLOT_BYTES,
        max_parallel: int = MAX_PARALLEL,
    ) -> None:
        self._slots = _Slots(concurrency, slot_bytes, max_parallel)
        self._flights: SingleFlight[str, _Transfer] = SingleFlight()

    @property
    def concurrency(self) -> int:
        return self._slots.limit

    @concurrency.setter
    def concurrency(self, concurrency: int) -> None:
        self._slots.limit = concurrency

    def active(self) -> int:
        """How many transfers hold a slot (or a share of one) now."""
        return self._slots.held

    def in_flight(self) -> int:
        """The bytes the transfers holding a slot weigh now."""
        return self._slots.held_bytes

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
