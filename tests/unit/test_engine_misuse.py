"""Misuse of an ``Engine`` is said at once, in one line, in Hoist's words."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from pathlib import Path

import pytest

from engine import Engine
from engine.errors import TransportError, UsageError


def test_an_engine_used_from_a_second_event_loop_says_so_at_the_first_call(
    tmp_path: Path,
) -> None:
    engine = Engine(tmp_path / "root", config_dir=tmp_path / "config")
    assert asyncio.run(engine.images()) == []

    with pytest.raises(UsageError, match="another event loop") as raised:
        asyncio.run(engine.images())

    assert "\n" not in str(raised.value)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.anyio
async def test_an_engine_never_closed_warns_once_in_hoist_s_words(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "root", config_dir=tmp_path / "config")
    with pytest.raises(TransportError):  # connections were opened for this
        await engine.pool.client(f"127.0.0.1:{_closed_port()}")

    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        del engine
        gc.collect()

    messages = [str(w.message) for w in heard if issubclass(w.category, ResourceWarning)]
    assert messages == [
        "an Engine was never closed: use 'async with Engine(...)' or 'await engine.aclose()'"
    ]
