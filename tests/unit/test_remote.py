"""``hoist push``'s client of ``hoist serve``: finding the daemon, and the credentials it sends."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import DaemonError, UsageError
from engine.progress.events import Drawable, Message
from engine.progress.summary import PushSummary, summary_message
from engine.registry.auth_config import (
    AuthConfig,
    from_registry_auth,
    from_registry_config,
    to_registry_auth,
    to_registry_config,
)
from engine.serve import remote
from engine.serve.address import Address, default_socket


@pytest.fixture(autouse=True)
def no_host_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(remote.HOST_ENV, raising=False)


def test_no_daemon_means_push_in_this_process(tmp_path: Path) -> None:
    assert remote.find_daemon(None, tmp_path) is None
    default_socket(tmp_path).write_text("a file, not a socket")
    assert remote.find_daemon(None, tmp_path) is None


def test_the_default_socket_is_found_and_not_named(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(default_socket(tmp_path)))
        found = remote.find_daemon(None, tmp_path)
    assert found == (Address(path=str(default_socket(tmp_path))), False)


def test_a_named_daemon_wins_flag_before_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(remote.HOST_ENV, "tcp://127.0.0.1:2375")
    assert remote.find_daemon(None, tmp_path) == (Address(host="127.0.0.1", port=2375), True)
    assert remote.find_daemon("unix:///run/h.sock", tmp_path) == (Address(path="/run/h.sock"), True)


@pytest.mark.parametrize("host", ["tcp://192.0.2.7:2375", "ssh://host", "unix://"])
def test_a_daemon_this_client_cannot_reach_safely_is_a_usage_error(
    host: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError):
        remote.find_daemon(host, tmp_path)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(_text, _text, _text, _text, _text)
def test_the_registry_auth_header_round_trips(
    username: str, password: str, identity: str, token: str, server: str
) -> None:
    auth = AuthConfig(username, password, identity, token, server)
    header = to_registry_auth(auth)
    assert from_registry_auth(header) == auth
    assert "=" not in header.rstrip("=") and "+" not in header and "/" not in header


@given(st.dictionaries(_text, st.builds(AuthConfig, _text, _text, _text, _text, _text), max_size=3))
def test_the_registry_config_header_round_trips(by_registry: dict[str, AuthConfig]) -> None:
    assert from_registry_config(to_registry_config(by_registry)) == by_registry


def test_a_batchs_stream_ends_with_its_summary() -> None:
    drawn: list[Drawable] = []
    rows = [PushSummary("h/a:v1", error="denied")]
    messages = [{"status": "The push refers to repository [h/a]"}, summary_message(rows)]
    assert remote._draw_batch(iter(messages), drawn.append) == rows
    assert drawn == [Message("The push refers to repository [h/a]")]


def test_a_batchs_stream_without_its_summary_is_the_daemons_last_error() -> None:
    stopped = [{"errorDetail": {"message": "store full"}, "error": "store full"}]
    with pytest.raises(DaemonError, match=r"^store full$"):
        remote._draw_batch(iter(stopped), lambda event: None)
    with pytest.raises(DaemonError, match="ended too soon"):
        remote._draw_batch(iter([{"status": "x"}]), lambda event: None)
