"""``Value``: the frozen classes of the thin client's path behave as frozen dataclasses do."""

from __future__ import annotations

import copy
import pickle

import pytest

from engine.progress.events import LayerProgress, LayerStatus, PushComplete, PushEnded, PushFailed
from engine.registry.auth_config import AuthConfig
from engine.value import Value

from .test_progress import DIGEST


class Point(Value):
    __slots__ = ("x", "y")
    x: int
    y: int

    def __init__(self, x: int, y: int = 0) -> None:
        super().__init__(x, y)


class Labelled(Point):
    __slots__ = ("label", "note")
    _uncompared = frozenset({"note"})
    label: str
    note: str

    def __init__(self, x: int, y: int, label: str, note: str = "") -> None:
        Value.__init__(self, x, y, label, note)


def test_fields_are_in_annotation_order_a_base_s_first() -> None:
    assert Point._fields == ("x", "y")
    assert Labelled._fields == ("x", "y", "label", "note")
    assert PushComplete._fields == ("repository", "tag", "digest", "size")
    assert PushEnded._fields == ()


def test_equal_and_hashed_by_the_compared_fields_of_the_same_class() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert Labelled(1, 2, "a", note="first") == Labelled(1, 2, "a", note="second")
    assert len({Labelled(1, 2, "a", "first"), Labelled(1, 2, "a", "second")}) == 1
    # Another class with the same values is another value, as with dataclasses.
    assert Point(1, 2) != Labelled(1, 2, "")
    assert Point(1, 2) != (1, 2)
    assert PushFailed("boom", "app", ValueError(1)) == PushFailed("boom", "app")


def test_repr_names_every_field() -> None:
    assert repr(Labelled(1, 2, "a")) == "Labelled(x=1, y=2, label='a', note='')"


def test_a_field_cannot_be_assigned_or_deleted() -> None:
    point = Point(1, 2)
    with pytest.raises(AttributeError, match="cannot assign to field 'x'"):
        point.x = 3
    with pytest.raises(AttributeError, match="cannot delete field 'y'"):
        del point.y
    assert point == Point(1, 2)


@pytest.mark.parametrize(
    "clone", [copy.copy, copy.deepcopy, lambda v: pickle.loads(pickle.dumps(v))]
)
def test_copies_and_pickles_are_equal_values(clone: object) -> None:
    assert callable(clone)
    event = LayerProgress(DIGEST, LayerStatus.PUSHING, 10, 20)
    for value in (Labelled(1, 2, "a", "n"), event, AuthConfig("user", "secret")):
        again = clone(value)
        assert again == value
        assert type(again) is type(value)


def test_credentials_keep_their_secrets_out_of_the_repr() -> None:
    shown = repr(AuthConfig("user", "hunter2", identity_token="refresh"))
    assert "hunter2" not in shown and "refresh" not in shown
    assert shown == (
        "AuthConfig(username='user', password='***', identity_token='***', server_address='')"
    )
