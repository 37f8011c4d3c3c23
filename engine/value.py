"""``Value``: a frozen class of named fields, for the modules a client of ``hoist serve`` loads.

``hoist push`` through a running daemon starts, sends one request and draws the answer in about
50 ms, and the ``dataclasses`` module would take 9 ms of them: it imports ``inspect`` (ast, dis,
tokenize with it), and every class it makes compiles code of its own. So the values on that path
(progress events, a batch's summary rows, references, credentials, daemon addresses) derive
from this base instead, and compare, hash, print, copy and refuse assignment as a frozen
dataclass does (the type checker, told by ``dataclass_transform``, refuses it too). Everywhere
else the engine uses dataclasses.

A subclass names its fields in ``__slots__``, annotates them in their order, and writes an
``__init__`` that passes their values to ``Value.__init__`` in that order (``_fields``, a base's
fields first, as ``namedtuple``'s). ``_uncompared`` names the fields left out of equality and
hashing (a dataclass field's ``compare=False``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, dataclass_transform

if TYPE_CHECKING:
    from typing import ClassVar


@dataclass_transform(frozen_default=True)
class Value:
    __slots__ = ()

    _fields: ClassVar[tuple[str, ...]] = ()
    _uncompared: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._fields = tuple(
            name
            for klass in reversed(cls.__mro__)
            for name in vars(klass).get("__annotations__", {})
            if name in vars(klass).get("__slots__", ())
        )

    def __init__(self, *values: object) -> None:
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def _compared(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields if name not in self._uncompared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Value)
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a {type(self).__name__}")

    def __reduce__(self) -> tuple[type[Value], tuple[object, ...]]:
        # copy, deepcopy and pickle make it anew through __init__: they would set its slots.
        return type(self), tuple(getattr(self, name) for name in self._fields)
