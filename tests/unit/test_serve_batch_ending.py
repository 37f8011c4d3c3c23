"""The last message of ``POST /hoist/push``'s stream: the batch's summary, or why it stopped."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.api import BatchItem
from engine.errors import StoreError
from engine.progress.summary import PushSummary, summary_in
from engine.serve.app import _batch_ending


def _ended(outcome: Any) -> asyncio.Task[list[BatchItem]]:
    """A batch's task, ended with ``outcome``: its items, an exception, or None (cancelled).

    Read once its loop is gone: a bug's traceback, which the daemon logs, reads source files."""

    async def batch() -> list[BatchItem]:
        if outcome is None:
            await asyncio.sleep(60)
        if isinstance(outcome, BaseException):
            raise outcome
        return list(outcome or [])

    async def run() -> asyncio.Task[list[BatchItem]]:
        task = asyncio.create_task(batch())
        if outcome is None:
            await asyncio.sleep(0)
            task.cancel()
        await asyncio.wait([task])
        return task

    return asyncio.run(run())


def test_a_batch_that_ended_sends_its_summary() -> None:
    items = [BatchItem("h/a:v1", error=StoreError("store full"))]
    assert summary_in(_batch_ending(_ended(items))) == [PushSummary("h/a:v1", error="store full")]


def test_a_batch_stopped_as_a_whole_sends_its_error() -> None:
    stopped = _batch_ending(_ended(StoreError("cannot write the push records")))
    assert stopped["error"] == "cannot write the push records"
    bug = _batch_ending(_ended(RuntimeError("secret detail")))
    assert bug["error"] == "internal error: see the hoist serve log"
    assert _batch_ending(_ended(None))["error"] == "the push was cancelled"
