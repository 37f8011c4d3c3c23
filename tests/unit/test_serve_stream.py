"""The daemon's message stream: the events told while a write went out go in the next write,
and the bytes are the same as one message per write would give, up to the last push's end."""

from __future__ import annotations

import asyncio
import json

from engine.digest import Digest
from engine.progress.events import LayerProgress, LayerStatus, Message, ProgressEvent, PushFailed
from engine.progress.jsonstream import LINE_END, encode, messages_for
from engine.serve import wire
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


def test_a_quiet_stream_leaves_out_the_layers_and_nothing_else() -> None:
    events = _events(2)

    async def run(*, quiet: bool) -> bytes:
        queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        for event in events:
            queue.put_nowait(event)
        response = _Response()
        await _stream(queue, response, pushes=2, repository=True, quiet=quiet)  # type: ignore[arg-type]
        return b"".join(response.writes)

    quiet, full = asyncio.run(run(quiet=True)), asyncio.run(run(quiet=False))

    assert quiet == _one_per_message([e for e in events if not isinstance(e, LayerProgress)])
    layer_lines = {line for line in full.splitlines() if b'"id"' in line}
    assert layer_lines, "the full stream has the layers' lines"
    assert set(quiet.splitlines()) == set(full.splitlines()) - layer_lines


def test_quiet_is_asked_for_by_hoist_s_own_parameter_only() -> None:
    assert wire.quiet_of({"quiet": "1"}) and wire.quiet_of({"quiet": "true"})
    assert not wire.quiet_of({}) and not wire.quiet_of({"quiet": "0"})
