"""A slice of a file, read by a worker thread (``read``) or, where memory holds the bytes, by the
event loop itself (``read_cached``): however the two take turns, the bytes are the slice's, in
order, and a file that ends early is reported once, by ``read``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.image.base import FileLayer, FileSlice

SIZE = 3 * 256 * 1024 + 777
OFFSET = 4096 + 13


def _file(directory: Path) -> tuple[Path, bytes]:
    data = random.Random(3).randbytes(OFFSET + SIZE + 999)
    path = directory / "blob"
    if not path.exists():
        path.write_bytes(data)
    return path, data[OFFSET : OFFSET + SIZE]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.booleans(), st.integers(min_value=1, max_value=300 * 1024)), max_size=40
    )
)
def test_both_reads_take_turns_and_give_the_slice_in_order(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[bool, int]]
) -> None:
    path, expected = _file(tmp_path_factory.getbasetemp())
    reader = FileSlice(path, OFFSET, SIZE)
    got = bytearray()
    try:
        for cached, size in steps:
            piece = reader.read_cached(size) if cached else reader.read(size)
            if piece is not None:
                assert 0 < len(piece) <= size or len(got) == SIZE
                got += piece
        while piece := reader.read(64 * 1024):
            got += piece
        assert reader.read_cached(10) == b"" and reader.read(10) == b"", "it ends with the slice"
    finally:
        reader.close()
    assert bytes(got) == expected


def test_a_file_cut_short_is_reported_by_read_not_by_read_cached(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 1000)
    reader = FileLayer(path=path, size=5000).reader(200)

    assert reader.read(10_000) == b"x" * 800
    assert reader.read_cached(100) is None
    with pytest.raises(EOFError, match="ended 4000 bytes early"):
        reader.read(100)
    reader.close()


def test_bytes_just_written_are_read_without_a_thread(tmp_path: Path) -> None:
    path, expected = _file(tmp_path)
    reader = FileSlice(path, OFFSET, SIZE)
    first = reader.read_cached(SIZE)
    reader.close()
    if reader._nowait is None:  # what the file system said
        pytest.skip(f"the file system of {tmp_path} cannot say whether a read would wait")
    assert first == expected
