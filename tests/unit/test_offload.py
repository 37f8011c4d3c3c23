"""``offload.spread``: a worker thread's work cut in parts, run at once, ended before it returns."""

from __future__ import annotations

import threading

import pytest

from engine import offload


@pytest.fixture(autouse=True)
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """At least two threads, whatever this machine has (the helpers are one fewer)."""
    monkeypatch.setattr(offload, "CPU_THREADS", max(offload.CPU_THREADS, 2))


def test_the_results_come_in_the_order_of_the_items() -> None:
    assert offload.spread(lambda n: n * n, list(range(50))) == [n * n for n in range(50)]


def test_the_parts_run_at_once() -> None:
    # Each part waits for another to reach the barrier: run one at a time, they would time out.
    meeting = threading.Barrier(2, timeout=30)
    threads = offload.spread(lambda _: (meeting.wait(), threading.get_ident())[1], [1, 2])
    assert len(set(threads)) == 2


def test_one_thread_runs_them_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "CPU_THREADS", 1)
    caller = threading.get_ident()
    assert offload.spread(lambda _: threading.get_ident(), [1, 2, 3]) == [caller] * 3


def test_an_error_is_raised_once_every_part_begun_has_ended() -> None:
    begun: list[int] = []
    ended: list[int] = []

    def part(n: int) -> int:
        begun.append(n)
        if n == 0:
            raise ValueError("part 0")
        sum(range(100_000))  # some work, so that a helper may still be in it
        ended.append(n)
        return n

    with pytest.raises(ValueError, match="part 0"):
        offload.spread(part, list(range(6)))
    assert sorted(begun) == sorted([0, *ended])


class _Owner:
    """Something a stream belongs to (a layer's pass)."""


def test_cpus_that_streams_keep_busy_are_left_alone() -> None:
    caller = threading.get_ident()
    owners = [_Owner() for _ in range(offload.CPU_THREADS)]
    ends = [offload.stream_started(owner) for owner in owners]
    try:
        assert offload.spread(lambda _: threading.get_ident(), [1, 2, 3]) == [caller] * 3
    finally:
        ends[0]()
        del owners[1]  # a stream abandoned unclosed ends with its owner
    meeting = threading.Barrier(2, timeout=30)
    threads = offload.spread(lambda _: (meeting.wait(), threading.get_ident())[1], [1, 2])
    assert len(set(threads)) == 2, "two CPUs left: the caller's stream's and one more"
    for end in ends:
        end()
