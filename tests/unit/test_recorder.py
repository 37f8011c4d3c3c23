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

    async def __call__(self, group: list[str]) -> None:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        self.groups.append(group)


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


async def test_overlapping_batches_defer_until_the_last_one_ends(anyio_backend: str) -> None:
    recorder, writer, _ = _recorder()
    first, second = recorder.batched(), recorder.batched()
    await first.__aenter__()
    await second.__aenter__()
    await recorder.record(["a"])
    await first.__aexit__(None, None, None)  # writes what is pending: "a" was written already
    await recorder.record(["b"])  # the second batch still runs, and "a" was just written
    assert writer.groups == [["a"]]
    await second.__aexit__(None, None, None)
    assert writer.groups == [["a"], ["b"]]
    await recorder.record(["c"])
    assert writer.groups == [["a"], ["b"], ["c"]]
