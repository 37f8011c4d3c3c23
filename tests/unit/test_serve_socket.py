"""The daemon's unix socket: group-only from the moment it exists, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine.serve import wire
from engine.serve.app import _unix_socket


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_the_socket_is_bound_group_only_and_the_umask_given_back(
    tmp_path: Path, umask: int
) -> None:
    path = tmp_path / "hoist.sock"
    before = os.umask(umask)
    try:
        sock = _unix_socket(path)
        try:
            # No chmod after the bind: this is the mode a client meets first.
            assert stat.S_IMODE(path.stat().st_mode) == 0o660
            assert os.umask(umask) == umask
        finally:
            sock.close()
    finally:
        os.umask(before)


def test_a_socket_bound_by_another_server_meanwhile_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "hoist.sock"
    first = _unix_socket(path)
    try:
        with pytest.raises(wire.WireError, match="another server listens there"):
            _unix_socket(path)
    finally:
        first.close()
