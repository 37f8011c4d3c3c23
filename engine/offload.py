"""Work off the event loop, on as many threads as that kind of work can use.

Compression and hashing release the GIL: one thread per CPU runs them truly in parallel, and
more only add switching. The store's small file operations hold the GIL for most of their
time, so a second thread for them buys nothing but contention. anyio's default pool (40
threads) would let fifty concurrent pushes run fifty such calls at once: measured on a 2-core
batch of 50 images, capping the threads cut the push's CPU time by a tenth.

Each limiter belongs to one event loop (a ``RunVar``), as anyio's own default does. A call on
one of those threads may split its work further (``spread``): one big layer then compresses on
the CPUs that no other layer keeps busy, not on the one thread its call holds.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar, TypeVarTuple, Unpack

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

T = TypeVar("T")
Item = TypeVar("Item")
Ts = TypeVarTuple("Ts")

#: Threads for work that releases the GIL (compressing, hashing, reading layer bytes).
CPU_THREADS = max(os.cpu_count() or 1, 1)
#: Threads for the store's bookkeeping (small files, JSON): one, so that it never contends.
STORE_THREADS = 1

_cpu: RunVar[CapacityLimiter] = RunVar("hoist_cpu_threads")
_store: RunVar[CapacityLimiter] = RunVar("hoist_store_threads")


def _limiter(var: RunVar[CapacityLimiter], threads: int) -> CapacityLimiter:
    try:
        return var.get()
    except LookupError:
        limiter = CapacityLimiter(threads)
        var.set(limiter)
        return limiter


async def cpu_bound(func: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    """Run ``func`` on one of the CPU-count threads of this event loop."""
    return await anyio.to_thread.run_sync(func, *args, limiter=_limiter(_cpu, CPU_THREADS))


async def store_bound(func: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    """Run ``func`` on the store's thread of this event loop."""
    return await anyio.to_thread.run_sync(func, *args, limiter=_limiter(_store, STORE_THREADS))


#: Streams of CPU work under way (layers being compressed), in every event loop together: each
#: keeps about one CPU busy from its start to its end, between its steps included.
_streams = 0
_counting = threading.Lock()


def stream_started(owner: object) -> Callable[[], None]:
    """Count a stream of CPU work as under way until the returned call, or until ``owner`` is
    collected (a stream abandoned unclosed), whichever comes first: ``spread`` leaves the CPUs
    that streams keep busy alone."""
    _count(1)
    return weakref.finalize(owner, _count, -1)


def _count(streams: int) -> None:
    global _streams
    with _counting:
        _streams += streams


def idle_cpus(most: int) -> int:
    """Up to ``most`` CPUs that no stream keeps busy (the caller's own stream being one)."""
    with _counting:
        return max(0, min(most, CPU_THREADS - max(_streams, 1)))


#: The threads ``spread`` hands parts to: one fewer than the CPUs, the caller's own being one.
_helpers: ThreadPoolExecutor | None = None
_helpers_made = threading.Lock()


def spread(func: Callable[[Item], T], items: Sequence[Item]) -> list[T]:
    """``func`` of every item, those that the idle CPUs can take at once; results in order.

    For a worker thread's CPU work that releases the GIL, cut in independent parts (each its
    own bytes, nothing shared). This thread takes parts, and so do as many helper threads as
    there are CPUs that no stream keeps busy (``stream_started``): when streams already fill
    them (several layers compressing), more threads would only add switching (measured: 5–10 %
    more CPU time for three layers on 2 cores). The call returns once every part has ended,
    raising the first error, so nothing outlives it.
    """
    helping = idle_cpus(len(items) - 1)
    if not helping:
        return [func(item) for item in items]
    left = iter(range(len(items)))
    taking = threading.Lock()
    done: dict[int, T] = {}

    def work() -> None:
        while True:
            with taking:
                index = next(left, None)
            if index is None:
                return
            done[index] = func(items[index])

    helpers = [_helper_threads().submit(work) for _ in range(helping)]
    try:
        work()
    finally:
        # A helper still queued (behind another caller's parts) has nothing left to take.
        for helper in helpers:
            helper.cancel()
        wait(helpers)
    for helper in helpers:
        if not helper.cancelled():
            helper.result()  # a helper's error
    return [done[index] for index in range(len(items))]


def _helper_threads() -> ThreadPoolExecutor:
    global _helpers
    with _helpers_made:
        if _helpers is None:
            _helpers = ThreadPoolExecutor(CPU_THREADS - 1, thread_name_prefix="hoist-spread")
        return _helpers
