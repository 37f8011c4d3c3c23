"""The push-record writer: group commit, and at most one write per interval during a batch."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from engine.store.recorder import Recorder

pytestmark = pytest.mark.anyio

EVERY = 0.1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Writer:
    """Keeps each group it is given; ``gate``, when set, holds a write until opened."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self._changed = asyncio.Condition()

    async def __call__(self, group: list[str]) -> None:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        self.groups.append(group)
        async with self._changed:
            self._changed.notify_all()

    async def until(self, count: int) -> None:
        """Wait until ``count`` groups were written."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.groups) >= count)


def _recorder() -> tuple[Recorder[str], Writer, Clock]:
    writer, clock = Writer(), Clock()
    return Recorder(writer, every=EVERY, clock=clock), writer, clock


async def test_alone_a_call_returns_once_its_records_are_written(anyio_backend: str) -> None:
    recorder, writer, _ = _recorder()
    await recorder.record(["a", "b"])
    assert writer.groups == [["a", "b"]]
    await recorder.record(["c"])
    assert writer.groups == [["a", "b"], ["c"]]


async def test_calls_during_a_write_are_written_together_next(anyio_backend: str) -> None:
    recorder, writer, _ = _recorder()
    writer.gate = asyncio.Event()
    first = asyncio.create_task(recorder.record(["a"]))
    await writer.started.wait()
    later = [asyncio.create_task(recorder.record([name])) for name in "bcd"]
    await asyncio.sleep(0)
    writer.gate.set()
    await asyncio.gather(first, *later)
    assert writer.groups == [["a"], ["b", "c", "d"]]


async def test_in_a_batch_a_call_writes_only_every_interval(anyio_backend: str) -> None:
    recorder, writer, clock = _recorder()
    async with recorder.batched():
        await recorder.record(["a"])  # nothing written yet: at once
        await recorder.record(["b"])  # just written: left to a later write
        assert writer.groups == [["a"]]
        clock.now += EVERY
        await recorder.record(["c"])
        assert writer.groups == [["a"], ["b", "c"]]
        await recorder.record(["d"])
        assert writer.groups == [["a"], ["b", "c"]]
    assert writer.groups == [["a"], ["b", "c"], ["d"]], "the batch's end writes what is left"
    await recorder.record(["e"])  # after the batch: at once again
    assert writer.groups[-1] == ["e"]


async def test_a_cancelled_batch_still_writes_its_records(anyio_backend: str) -> None:
    recorder, writer, _ = _recorder()
    with anyio.CancelScope() as scope:
        async with recorder.batched():
            await recorder.record(["a"])
            await recorder.record(["b"])
            scope.cancel()
            await anyio.sleep(1)
    assert scope.cancelled_caught
    assert writer.groups == [["a"], ["b"]]


async def test_a_push_beside_a_batch_returns_once_written(anyio_backend: str) -> None:
    recorder, writer, _ = _recorder()
    inside, release = asyncio.Event(), asyncio.Event()

    async def batch() -> None:
        async with recorder.batched():
            await recorder.record(["batch-1"])
            await recorder.record(["batch-2"])  # left for later
            inside.set()
            await release.wait()

    running = asyncio.create_task(batch())
    await inside.wait()
    await recorder.record(["alone"])  # another task, outside the batch: written before returning
    assert "alone" in [record for group in writer.groups for record in group]
    release.set()
    await running
    assert sorted(r for group in writer.groups for r in group) == ["alone", "batch-1", "batch-2"]


async def test_a_record_left_for_later_is_written_without_another_call(anyio_backend: str) -> None:
    writer = Writer()
    recorder: Recorder[str] = Recorder(writer, every=0.01)  # the real clock: a write falls due

    async def batch() -> None:
        async with recorder.batched():
            await recorder.record(["a"])
            await recorder.record(["b"])  # just written: scheduled, not written now
            assert writer.groups == [["a"]]
            await writer.until(2)  # inside the batch: no later call, no end of the batch
            assert writer.groups == [["a"], ["b"]]

    await asyncio.wait_for(batch(), timeout=10)
    assert writer.groups == [["a"], ["b"]], "written once, by the scheduled write"


async def test_a_batch_cancelled_by_its_task_still_writes(anyio_backend: str) -> None:
    recorder, writer, _ = _recorder()
    started = asyncio.Event()

    async def batch() -> None:
        async with recorder.batched():
            await recorder.record(["a"])
            await recorder.record(["b"])
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(batch())
    await started.wait()
    task.cancel()  # as the command line's signal handler and asyncio.gather cancel
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writer.groups == [["a"], ["b"]]


async def test_concurrent_batches_each_write_their_records_before_they_end(
    anyio_backend: str,
) -> None:
    recorder, writer, _ = _recorder()
    first_done, second_may_end = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with recorder.batched():
            await recorder.record(["1a"])
            await recorder.record(["1b"])
        first_done.set()

    async def second() -> None:
        async with recorder.batched():
            await recorder.record(["2a"])
            await second_may_end.wait()

    running = asyncio.create_task(second())
    await asyncio.sleep(0)
    await first()
    assert first_done.is_set()
    assert {r for group in writer.groups for r in group} >= {"1a", "1b"}
    second_may_end.set()
    await running
    assert sorted(r for group in writer.groups for r in group) == ["1a", "1b", "2a"]
