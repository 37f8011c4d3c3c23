"""``hoist push``'s client of ``hoist serve``: finding the daemon, and the credentials it sends."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import UsageError
from engine.registry.auth_config import AuthConfig, from_registry_auth, to_registry_auth
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
