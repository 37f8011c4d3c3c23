"""Work off the event loop, on as many threads as that kind of work can use.

Compression and hashing release the GIL: one thread per CPU runs them truly in parallel, and
more only add switching. The store's small file operations hold the GIL for most of their
time, so a second thread for them buys nothing but contention. anyio's default pool (40
threads) would let fifty concurrent pushes run fifty such calls at once: measured on a 2-core
batch of 50 images, capping the threads cut the push's CPU time by a tenth.

Each limiter belongs to one event loop (a ``RunVar``), as anyio's own default does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

T = TypeVar("T")
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
