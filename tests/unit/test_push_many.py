"""``push_many``'s task-group rules, with each push replaced by a stand-in (pure scheduling: the
pushes themselves are tested against a real registry in tests/integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Engine
from engine.errors import DeniedError

pytestmark = pytest.mark.anyio


class StandIn:
    """Pushes that fail as told once every one has started; the others wait to be cancelled."""

    def __init__(self, failures: dict[str, Exception], count: int) -> None:
        self.failures = failures
        self.started = 0
        self.all_started = anyio.Event()
        self.cancelled: list[str] = []
        self.running: set[str] = set()
        self.count = count

    async def push(self, ref: str, **_: Any) -> str:
        self.started += 1
        self.running.add(ref)
        if self.started == self.count:
            self.all_started.set()
        try:
            await self.all_started.wait()
            if ref in self.failures:
                raise self.failures[ref]
            if self.failures:
                await anyio.sleep_forever()
            return f"pushed {ref}"
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(ref)
            raise
        finally:
            self.running.discard(ref)


async def _push_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refs: list[str], stand_in: StandIn
) -> list[Any]:
    async with Engine(tmp_path / "root", config_dir=tmp_path / "config") as engine:
        monkeypatch.setattr(engine, "push", stand_in.push)
        with anyio.fail_after(10):
            return list(await engine.push_many(refs))


async def test_an_unexpected_error_cancels_the_other_pushes_and_is_raised_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = ["a:1", "b:1", "c:1"]
    stand_in = StandIn({"b:1": RuntimeError("a bug")}, len(refs))

    with pytest.raises(RuntimeError, match="a bug"):
        await _push_many(tmp_path, monkeypatch, refs, stand_in)

    assert sorted(stand_in.cancelled) == ["a:1", "c:1"]
    assert not stand_in.running, "nothing runs on in the background"


async def test_a_hoist_error_is_the_item_s_and_stops_no_other_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = ["a:1", "b:1"]
    denied = DeniedError("denied: no", status=403)

    class Finishing(StandIn):
        async def push(self, ref: str, **options: Any) -> str:
            if ref == "b:1":
                raise denied
            return f"pushed {ref}"

    items = await _push_many(tmp_path, monkeypatch, refs, Finishing({}, len(refs)))

    assert [(item.ref, item.error) for item in items] == [("a:1", None), ("b:1", denied)]
    assert items[0].result == "pushed a:1"
