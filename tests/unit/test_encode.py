"""How much a step of a layer being gzipped reads: a block for itself, one more per idle CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import offload
from engine.digest import Digest
from engine.image.base import FileLayer
from engine.push.compression import DEFAULT
from engine.push.encode import _Pass
from engine.push.gzip_member import BLOCK_SIZE


class _Owner:
    """Another layer being compressed."""


def _first_step(tmp_path: Path) -> int:
    path = tmp_path / "layer.tar"
    path.write_bytes(bytes(4 * BLOCK_SIZE))
    layer = FileLayer(path=path, size=4 * BLOCK_SIZE, diff_id=Digest.of(path.read_bytes()))
    one = _Pass(layer, DEFAULT)
    one.step()
    one.close()
    return one.position


def test_a_layer_alone_reads_a_block_for_each_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offload, "CPU_THREADS", 2)
    assert _first_step(tmp_path) == 2 * BLOCK_SIZE


def test_a_layer_among_as_many_as_the_cpus_reads_one_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offload, "CPU_THREADS", 2)
    other = _Owner()
    end = offload.stream_started(other)
    try:
        assert _first_step(tmp_path) == BLOCK_SIZE
    finally:
        end()
