"""Structured concurrency for the engine: every task has an owner that waits for it to end.

Two shapes, and the engine starts tasks in no other:

- ``gather``: sibling calls in a task group; the first failure cancels the rest and is raised
  once they have all ended.
- ``SingleFlight``: callers asking for the same key at once share one call (a layer's transfer,
  a token exchange, a connection to a registry). The call runs in a task owned by its callers
  together: any may leave, and the last to leave cancels it and waits for it to end, so that no
  call outlives everyone who asked for it.

``gather`` is an anyio task group. A flight is an asyncio task, as anyio has no task that
several callers share; waiting for it to end while being cancelled takes both libraries' kinds
of shield (an anyio cancel scope re-cancels every await inside it; native asyncio cancels once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from typing import Any, Generic, TypeVar

import anyio

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
F = TypeVar("F", bound="Flight[Any]")


async def gather(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run every call concurrently; their results in order, or the first error, unwrapped."""
    results: dict[int, T] = {}

    async def run(index: int) -> None:
        results[index] = await calls[index]()

    try:
        async with anyio.create_task_group() as group:
            for index in range(len(calls)):
                group.start_soon(run, index)
    except BaseExceptionGroup as group_error:
        raise _first_error(group_error) from None
    return [results[index] for index in range(len(calls))]


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that started it: siblings' cancellations are only its echo."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return group.exceptions[0]


class Flight(Generic[T]):
    """One shared call: its task, and how many callers wait for its result."""

    def __init__(self, call: Coroutine[Any, Any, T], name: str) -> None:
        self.task = asyncio.create_task(call, name=name)
        self.waiters = 0
        #: Every caller left and the task is being cancelled: a new caller starts afresh.
        self.abandoned = False

    async def result(self) -> T:
        """The call's result, or its exception. A caller cancelled meanwhile leaves; the last
        to leave cancels the task and waits for it to end before its own cancellation goes on."""
        self.waiters += 1
        try:
            await asyncio.wait({self.task})
        except asyncio.CancelledError:
            self.waiters -= 1
            if self.waiters == 0:
                await self._abandon()
            raise
        self.waiters -= 1
        return self.task.result()

    async def ended(self) -> None:
        """Wait until the task has ended, whatever its outcome; only our own cancellation
        raises."""
        await asyncio.wait({self.task})

    async def _abandon(self) -> None:
        if not self.task.done():
            self.abandoned = True
            self.task.cancel()
            await join_shielded(self.task)
        retrieve(self.task)


class SingleFlight(Generic[K, F]):
    """At most one flight per key: a caller asking for a key in flight joins it."""

    def __init__(self) -> None:
        self._flights: dict[K, F] = {}

    async def join(self, key: K, start: Callable[[], F]) -> F:
        """The flight for ``key``: the one under way, or a new one from ``start()`` (after an
        abandoned one has ended: its cancellation is not the new caller's answer)."""
        while True:
            current = self._flights.get(key)
            if current is None or current.task.done():
                return self._start(key, start)
            if not current.abandoned:
                return current
            await current.ended()

    def forget(self, key: K) -> None:
        """Later callers start a flight of their own; the one under way goes on for its own."""
        self._flights.pop(key, None)

    def flights(self) -> list[F]:
        return list(self._flights.values())

    def _start(self, key: K, start: Callable[[], F]) -> F:
        flight = start()
        self._flights[key] = flight
        flight.task.add_done_callback(lambda _: self._landed(key, flight))
        return flight

    def _landed(self, key: K, flight: F) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]


async def join_shielded(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to end even while the waiter is being cancelled (the waiter's own
    cancellation is raised by its caller afterwards)."""
    with anyio.CancelScope(shield=True):
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                continue  # a native cancel, which the scope does not hold back


def retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a task's error as seen: nobody is left to receive it (its callers' own endings are
    reported where they happen), and asyncio would print it as never retrieved."""
    if task.done() and not task.cancelled():
        task.exception()
