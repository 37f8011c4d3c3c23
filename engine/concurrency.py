"""Structured concurrency helpers: run sibling tasks where the first failure cancels the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

T = TypeVar("T")


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that started it: siblings' cancellations are only its echo."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return group.exceptions[0]


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
