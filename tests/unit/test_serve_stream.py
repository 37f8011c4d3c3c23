"""The daemon's message stream: the events told while a write went out go in the next write,
and the bytes are the same as one message per write would give, up to the last push's end."""

from __future__ import annotations

import asyncio
import json

from engine.digest import Digest
from engine.progress.events import LayerProgress, LayerStatus, Message, ProgressEvent, PushFailed
from engine.progress.jsonstream import LINE_END, encode, messages_for
from engine.serve.app import _stream

LAYER = Digest.of(b"layer")


class _Response:
    """What ``_stream`` writes to: each write kept apart."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._wrote = asyncio.Event()

    async def write(self, data: bytes) -> None:
        self.writes.append(data)
        self._wrote.set()
        await asyncio.sleep(0)

    async def next_write(self) -> None:
        await self._wrote.wait()
        self._wrote.clear()


def _events(pushes: int) -> list[ProgressEvent]:
    events: list[ProgressEvent] = []
    for n in range(pushes):
        events += [
            Message(f"The push refers to repository [h/app{n}]"),
            LayerProgress(LAYER, LayerStatus.PREPARING),
            LayerProgress(LAYER, LayerStatus.PUSHED),
            PushFailed("denied", ref=f"h/app{n}:v1"),
        ]
    return events


def _one_per_message(events: list[ProgressEvent]) -> bytes:
    return b"".join(
        (encode(message) + LINE_END).encode()
        for event in events
        for message in messages_for(event, repository=True)
    )


def test_events_told_at_once_go_in_one_write() -> None:
    events = _events(3)

    async def run() -> _Response:
        queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        for event in events:
            queue.put_nowait(event)
        response = _Response()
        await _stream(queue, response, pushes=3, repository=True)  # type: ignore[arg-type]
        return response

    response = asyncio.run(run())

    assert len(response.writes) == 1
    assert response.writes[0] == _one_per_message(events)
    assert all(json.loads(line) for line in response.writes[0].splitlines())


def test_events_told_one_by_one_go_as_they_come_and_the_stream_ends_with_the_pushes() -> None:
    events = _events(2)

    async def run() -> _Response:
        queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        response = _Response()
        streaming = asyncio.create_task(_stream(queue, response, pushes=2, repository=True))  # type: ignore[arg-type]
        for event in events:
            queue.put_nowait(event)
            await asyncio.wait_for(response.next_write(), 5)
        await asyncio.wait_for(streaming, 5)
        return response

    response = asyncio.run(run())

    assert len(response.writes) == len(events)
    assert b"".join(response.writes) == _one_per_message(events)
