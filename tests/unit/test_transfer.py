"""The transfer manager: slot limit, byte budget, FIFO starts, dedup, watchers, cancellation,
failure."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from engine.digest import Digest
from engine.errors import PushError
from engine.progress.events import LayerProgress, LayerStatus, ProgressEvent
from engine.transfer import TransferContext, TransferManager

TIMEOUT = 5


def ignore(event: ProgressEvent) -> None:
    """A sink for watchers whose progress the test does not look at."""


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until ``predicate`` holds; every caller is bounded by fail_after."""
    # Polling on purpose: the predicates read the manager's own state, which offers no event.
    while not predicate():
        await anyio.lowlevel.checkpoint()


async def settle() -> None:
    """Give every ready task a few turns, so that a wrong start would have happened."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


LAYER = Digest.of(b"a layer")
PREPARING, PUSHED, PUSHING = LayerStatus.PREPARING, LayerStatus.PUSHED, LayerStatus.PUSHING


def layer_event(status: LayerStatus, current: int | None = None) -> LayerProgress:
    return LayerProgress(LAYER, status, current, 100 if current is not None else None)


@pytest.mark.anyio
async def test_no_more_than_the_limit_hold_a_slot() -> None:
    manager = TransferManager(concurrency=3)
    entered = running = peak = 0
    gate = anyio.Event()
    results: dict[str, str] = {}

    async def func(ctx: TransferContext) -> str:
        nonlocal entered, running, peak
        entered += 1
        await ctx.wait_started()
        running += 1
        peak = max(peak, running, manager.active())
        await gate.wait()
        running -= 1
        return ctx.key.upper()

    async def watch(key: str) -> None:
        results[key] = await manager.transfer(key, func, ignore)

    keys = [f"layer-{i}" for i in range(12)]
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(watch, key)
            await until(lambda: entered == len(keys))
            await settle()
            assert running == 3
            assert manager.active() == 3
            gate.set()
    assert peak == 3
    assert results == {key: key.upper() for key in keys}
    assert manager.active() == 0


@pytest.mark.anyio
async def test_slots_are_granted_in_request_order() -> None:
    manager = TransferManager(concurrency=1)
    requested: list[str] = []
    started: list[str] = []
    gate = anyio.Event()

    async def func(ctx: TransferContext) -> None:
        requested.append(ctx.key)
        await ctx.wait_started()
        started.append(ctx.key)
        await gate.wait()

    def has_requested(key: str) -> Callable[[], bool]:
        return lambda: key in requested

    keys = ["e", "b", "d", "a", "c"]
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(manager.transfer, key, func, ignore)
                await until(has_requested(key))
            assert started == ["e"]
            gate.set()
    assert started == keys


@pytest.mark.anyio
async def test_raising_the_limit_starts_waiters() -> None:
    manager = TransferManager(concurrency=1)
    contexts: list[TransferContext] = []
    started: list[str] = []
    gate = anyio.Event()

    async def func(ctx: TransferContext) -> None:
        contexts.append(ctx)
        await ctx.wait_started()
        started.append(ctx.key)
        await gate.wait()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for key in ["a", "b", "c"]:
                tg.start_soon(manager.transfer, key, func, ignore)
            await until(lambda: len(contexts) == 3)
            await settle()
            assert started == ["a"]
            assert [ctx.started for ctx in contexts] == [True, False, False]
            manager.concurrency = 3
            await until(lambda: len(started) == 3)
            assert manager.active() == 3
            assert manager.concurrency == 3
            gate.set()
    assert manager.active() == 0


MIB = 1 << 20


async def _started_at_once(manager: TransferManager, sizes: list[int | None]) -> list[str]:
    """Start a transfer per size, in order; the keys that hold a slot once nothing else moves."""
    contexts: list[TransferContext] = []
    gate = anyio.Event()

    async def func(ctx: TransferContext) -> None:
        contexts.append(ctx)
        await ctx.wait_started(size=sizes[int(ctx.key)])
        await gate.wait()

    def has_requested(count: int) -> Callable[[], bool]:
        return lambda: len(contexts) == count

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for index in range(len(sizes)):
                tg.start_soon(manager.transfer, str(index), func, ignore)
                await until(has_requested(index + 1))
            await settle()
            started = [ctx.key for ctx in contexts if ctx.started]
            gate.set()
    assert manager.active() == 0 and manager.in_flight() == 0
    return started


@pytest.mark.anyio
async def test_small_transfers_share_a_slot_up_to_the_parallel_cap() -> None:
    manager = TransferManager(2, slot_bytes=MIB, max_parallel=6)
    # 100 KiB each: twenty would fit in two slots' bytes; the cap lets six go.
    started = await _started_at_once(manager, [100 << 10] * 10)
    assert started == [str(i) for i in range(6)]


@pytest.mark.anyio
async def test_transfers_of_a_slot_or_more_go_as_many_as_the_limit() -> None:
    manager = TransferManager(3, slot_bytes=MIB, max_parallel=32)
    started = await _started_at_once(manager, [MIB, 40 * MIB, None, MIB, 5 * MIB])
    assert started == ["0", "1", "2"], "a big layer, or one of unknown size, takes a whole slot"


@pytest.mark.anyio
async def test_small_transfers_fill_the_bytes_a_big_one_leaves() -> None:
    manager = TransferManager(2, slot_bytes=MIB, max_parallel=32)
    quarter = MIB // 4
    started = await _started_at_once(
        manager, [8 * MIB, quarter, quarter, quarter, quarter, quarter]
    )
    assert started == ["0", "1", "2", "3", "4"]
    assert manager.concurrency == 2


@pytest.mark.anyio
async def test_a_big_transfer_at_the_head_of_the_queue_is_not_overtaken() -> None:
    manager = TransferManager(1, slot_bytes=MIB, max_parallel=32)
    half = MIB // 2
    # The second does not fit beside the first; the third would, but goes in its turn.
    started = await _started_at_once(manager, [half, MIB, half])
    assert started == ["0"]


@pytest.mark.anyio
async def test_a_transfer_gives_back_what_it_took_and_keeps_its_size_when_it_queues_again() -> None:
    manager = TransferManager(1, slot_bytes=MIB, max_parallel=32)
    half = MIB // 2
    phases: list[tuple[int, int]] = []
    again = anyio.Event()

    async def func(ctx: TransferContext) -> None:
        await ctx.wait_started(size=half)
        phases.append((manager.active(), manager.in_flight()))
        ctx.set_inactive()
        phases.append((manager.active(), manager.in_flight()))
        await again.wait()
        await ctx.wait_started()  # a retry: no size said, the one said before still counts
        phases.append((manager.active(), manager.in_flight()))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.transfer, "a", func, ignore)
            await until(lambda: len(phases) == 2)
            again.set()
    assert phases == [(1, half), (0, 0), (1, half)]
    assert manager.in_flight() == 0


@pytest.mark.anyio
async def test_a_queued_transfer_that_says_its_size_is_weighed_by_it() -> None:
    manager = TransferManager(1, slot_bytes=MIB, max_parallel=32)
    contexts: list[TransferContext] = []
    gate = anyio.Event()

    async def func(ctx: TransferContext) -> None:
        contexts.append(ctx)
        size = MIB // 2 if ctx.key == "small" else None
        await ctx.wait_started(size=size)
        await gate.wait()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.transfer, "half", _holding_half(gate), ignore)
            await until(lambda: manager.in_flight() == MIB // 2)
            # Queued at creation as a whole slot, which does not fit; half a slot does.
            tg.start_soon(manager.transfer, "small", func, ignore)
            await until(lambda: len(contexts) == 1)
            await until(lambda: contexts[0].started)
            assert manager.in_flight() == MIB
            gate.set()


def _holding_half(gate: anyio.Event) -> Callable[[TransferContext], Awaitable[None]]:
    async def func(ctx: TransferContext) -> None:
        await ctx.wait_started(size=MIB // 2)
        await gate.wait()

    return func


@pytest.mark.parametrize(
    ("limits", "what"),
    [({"slot_bytes": 0}, "slot size"), ({"max_parallel": 0}, "parallel transfers")],
)
def test_a_budget_of_nothing_is_refused(limits: dict[str, int], what: str) -> None:
    with pytest.raises(ValueError, match=what):
        TransferManager(1, **limits)


@pytest.mark.anyio
async def test_same_key_shares_one_run_its_progress_and_its_result() -> None:
    manager = TransferManager()
    calls = 0
    gate = anyio.Event()
    preparing, pushed = layer_event(PREPARING), layer_event(PUSHED)

    async def func(ctx: TransferContext) -> str:
        nonlocal calls
        calls += 1
        ctx.progress(preparing)
        await gate.wait()
        ctx.progress(pushed)
        return f"pushed {ctx.key} (run {calls})"

    first: list[ProgressEvent] = []
    second: list[ProgressEvent] = []
    results: list[str] = []

    async def watch(sink: list[ProgressEvent]) -> None:
        results.append(await manager.transfer("repo/layer", func, sink.append))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, first)
            await until(lambda: bool(first))
            tg.start_soon(watch, second)
            await until(lambda: bool(second))
            gate.set()
        assert calls == 1
        assert first == [preparing, pushed]
        assert second == [preparing, pushed]
        assert results == ["pushed repo/layer (run 1)"] * 2

        # Once finished the key is forgotten: the next request runs again.
        assert await manager.transfer("repo/layer", func, ignore) == "pushed repo/layer (run 2)"
    assert calls == 2


@pytest.mark.anyio
async def test_a_late_watcher_first_receives_the_last_event() -> None:
    manager = TransferManager()
    gate = anyio.Event()
    events = [layer_event(PREPARING), layer_event(PUSHING, 40), layer_event(PUSHED)]

    async def func(ctx: TransferContext) -> None:
        ctx.progress(events[0])
        ctx.progress(events[1])
        await gate.wait()
        ctx.progress(events[2])

    early: list[ProgressEvent] = []
    late: list[ProgressEvent] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.transfer, "layer", func, early.append)
            await until(lambda: len(early) == 2)
            tg.start_soon(manager.transfer, "layer", func, late.append)
            await until(lambda: bool(late))
            gate.set()
    assert early == events
    assert late == events[1:]


@pytest.mark.anyio
async def test_cancelling_one_of_two_watchers_keeps_the_transfer() -> None:
    manager = TransferManager()
    gate = anyio.Event()
    func_cancelled = False

    async def func(ctx: TransferContext) -> str:
        nonlocal func_cancelled
        ctx.progress(layer_event(PREPARING))
        try:
            await gate.wait()
        except anyio.get_cancelled_exc_class():
            func_cancelled = True
            raise
        return "done"

    first: list[ProgressEvent] = []
    second: list[ProgressEvent] = []
    first_scope = anyio.CancelScope()
    first_left = anyio.Event()
    results: list[str] = []

    async def watch_first() -> None:
        with first_scope:
            await manager.transfer("layer", func, first.append)
        first_left.set()

    async def watch_second() -> None:
        results.append(await manager.transfer("layer", func, second.append))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_first)
            await until(lambda: bool(first))
            tg.start_soon(watch_second)
            await until(lambda: bool(second))
            first_scope.cancel()
            await first_left.wait()
            await settle()
            assert not func_cancelled
            gate.set()
    assert first_scope.cancelled_caught
    assert not func_cancelled
    assert results == ["done"]


@pytest.mark.anyio
async def test_cancelling_the_only_watcher_cancels_the_run_and_frees_its_slot() -> None:
    manager = TransferManager(concurrency=1)
    a_started = anyio.Event()
    a_saw_cancel = False
    b_contexts: list[TransferContext] = []

    async def func_a(ctx: TransferContext) -> str:
        nonlocal a_saw_cancel
        await ctx.wait_started()
        a_started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            a_saw_cancel = True
            raise
        return "unreachable"

    async def func_b(ctx: TransferContext) -> str:
        b_contexts.append(ctx)
        await ctx.wait_started()
        return "b pushed"

    scope = anyio.CancelScope()
    a_ended_before_watcher_left: list[bool] = []
    results: list[str] = []

    async def watch_a() -> None:
        with scope:
            await manager.transfer("a", func_a, ignore)
        a_ended_before_watcher_left.append(a_saw_cancel)

    async def watch_b() -> None:
        results.append(await manager.transfer("b", func_b, ignore))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_a)
            await a_started.wait()
            tg.start_soon(watch_b)
            await until(lambda: bool(b_contexts))
            await settle()
            assert not b_contexts[0].started
            scope.cancel()
        assert scope.cancelled_caught
        assert a_ended_before_watcher_left == [True]
        assert results == ["b pushed"]
        assert manager.active() == 0

        async def again(ctx: TransferContext) -> str:
            return "a pushed"

        assert await manager.transfer("a", again, ignore) == "a pushed"


@pytest.mark.anyio
async def test_a_request_for_an_abandoned_key_waits_for_it_then_runs_afresh() -> None:
    manager = TransferManager()
    started = anyio.Event()
    cancelled = anyio.Event()
    cleanup_may_end = anyio.Event()
    order: list[str] = []

    async def first_run(ctx: TransferContext) -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            with anyio.CancelScope(shield=True):
                await cleanup_may_end.wait()
            order.append("first run ended")
            raise
        return "unreachable"

    async def second_run(ctx: TransferContext) -> str:
        order.append("second run started")
        return "fresh"

    scope = anyio.CancelScope()
    results: list[str] = []

    async def watch_first() -> None:
        with scope:
            await manager.transfer("layer", first_run, ignore)

    async def watch_second() -> None:
        results.append(await manager.transfer("layer", second_run, ignore))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_first)
            await started.wait()
            scope.cancel()
            await cancelled.wait()
            tg.start_soon(watch_second)
            await settle()
            assert order == []
            cleanup_may_end.set()
    assert order == ["first run ended", "second run started"]
    assert results == ["fresh"]


@pytest.mark.anyio
async def test_set_inactive_frees_the_slot_and_wait_started_queues_again() -> None:
    manager = TransferManager(concurrency=1)
    steps: list[str] = []
    a_may_resume = anyio.Event()
    b_may_end = anyio.Event()
    a_states: list[bool] = []

    async def func_a(ctx: TransferContext) -> None:
        await ctx.wait_started()
        steps.append("a started")
        ctx.set_inactive()
        a_states.append(ctx.started)
        await a_may_resume.wait()
        steps.append("a reactivating")
        await ctx.wait_started()
        a_states.append(ctx.started)
        steps.append("a reactivated")

    async def func_b(ctx: TransferContext) -> None:
        await ctx.wait_started()
        steps.append("b started")
        await b_may_end.wait()
        steps.append("b ended")

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.transfer, "a", func_a, ignore)
            await until(lambda: bool(a_states))
            assert manager.active() == 0
            tg.start_soon(manager.transfer, "b", func_b, ignore)
            await until(lambda: "b started" in steps)
            a_may_resume.set()
            await until(lambda: "a reactivating" in steps)
            await settle()
            assert "a reactivated" not in steps
            assert manager.active() == 1
            b_may_end.set()
    assert steps == ["a started", "b started", "a reactivating", "b ended", "a reactivated"]
    assert a_states == [False, True]
    assert manager.active() == 0


@pytest.mark.anyio
async def test_an_error_reaches_every_watcher() -> None:
    manager = TransferManager()
    gate = anyio.Event()
    calls = 0

    async def func(ctx: TransferContext) -> None:
        nonlocal calls
        calls += 1
        ctx.progress(layer_event(PREPARING))
        await gate.wait()
        raise PushError(f"layer {ctx.key} failed")

    first: list[ProgressEvent] = []
    second: list[ProgressEvent] = []
    errors: list[PushError] = []

    async def watch(sink: list[ProgressEvent]) -> None:
        with pytest.raises(PushError) as info:
            await manager.transfer("layer", func, sink.append)
        errors.append(info.value)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, first)
            await until(lambda: bool(first))
            tg.start_soon(watch, second)
            await until(lambda: bool(second))
            gate.set()
    assert calls == 1
    assert [str(error) for error in errors] == ["layer layer failed"] * 2
    assert errors[0] is errors[1]
    assert manager.active() == 0


@pytest.mark.anyio
async def test_a_failing_transfer_in_a_task_group_cancels_the_others() -> None:
    manager = TransferManager(concurrency=3)
    entered: set[str] = set()
    saw_cancel: set[str] = set()
    fail_now = anyio.Event()

    async def patient(ctx: TransferContext) -> None:
        entered.add(ctx.key)
        try:
            await ctx.wait_started()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            saw_cancel.add(ctx.key)
            raise

    async def failing(ctx: TransferContext) -> None:
        await ctx.wait_started()
        await fail_now.wait()
        raise PushError("registry said no")

    with anyio.fail_after(TIMEOUT), pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.transfer, "a", patient, ignore)
            tg.start_soon(manager.transfer, "b", patient, ignore)
            tg.start_soon(manager.transfer, "bad", failing, ignore)
            tg.start_soon(manager.transfer, "c", patient, ignore)
            await until(lambda: entered == {"a", "b", "c"})
            assert manager.active() == 3
            fail_now.set()
    assert info.group_contains(PushError, match="registry said no")
    assert saw_cancel == {"a", "b", "c"}
    assert manager.active() == 0


@pytest.mark.anyio
async def test_a_raising_sink_is_dropped_and_the_transfer_goes_on() -> None:
    manager = TransferManager()
    broken_calls = 0
    events = [layer_event(PREPARING), layer_event(PUSHED)]

    def broken(event: ProgressEvent) -> None:
        nonlocal broken_calls
        broken_calls += 1
        raise RuntimeError("renderer crashed")

    gate = anyio.Event()

    async def func(ctx: TransferContext) -> str:
        ctx.progress(events[0])
        await gate.wait()
        ctx.progress(events[1])
        return "done"

    healthy: list[ProgressEvent] = []
    results: list[str] = []

    async def watch(sink: Callable[[ProgressEvent], None]) -> None:
        results.append(await manager.transfer("layer", func, sink))

    with anyio.fail_after(TIMEOUT), capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, broken)
            await until(lambda: broken_calls == 1)
            tg.start_soon(watch, healthy.append)
            await until(lambda: bool(healthy))
            gate.set()
    assert results == ["done", "done"]
    assert broken_calls == 1
    assert healthy == events
    assert [(entry["log_level"], entry["key"]) for entry in logs] == [("warning", "layer")]


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TransferManager(concurrency=0)
    manager = TransferManager()
    with pytest.raises(ValueError, match="at least 1"):
        manager.concurrency = -1
    assert manager.concurrency == 5


@pytest.mark.anyio
async def test_native_asyncio_cancellation_of_the_only_watcher_cancels_the_run() -> None:
    manager = TransferManager(concurrency=1)
    started = asyncio.Event()
    saw_cancel: list[str] = []

    async def func(ctx: TransferContext) -> None:
        await ctx.wait_started()
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.append(ctx.key)
            raise

    with anyio.fail_after(TIMEOUT):
        watcher = asyncio.create_task(manager.transfer("layer", func, ignore))
        await started.wait()
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
    assert saw_cancel == ["layer"]
    assert manager.active() == 0


@pytest.mark.anyio
async def test_a_failure_its_cancelled_watcher_never_saw_is_retrieved() -> None:
    """The transfer fails just as its only watcher is cancelled (a sibling layer failed first):
    the error is retrieved, not printed by asyncio as a task exception never retrieved."""
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        manager = TransferManager(1)
        go = asyncio.Event()

        async def fails(ctx: TransferContext) -> None:
            await go.wait()
            raise RuntimeError("refused")

        watcher = asyncio.create_task(manager.transfer("k", fails, lambda _event: None))
        await asyncio.sleep(0)  # the transfer runs and waits
        go.set()
        await asyncio.sleep(0)  # the transfer fails; its watcher has not resumed yet
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
        del watcher
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert unretrieved == []
