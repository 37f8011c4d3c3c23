"""``Descriptor``: what a manifest says of a blob (OCI's content descriptor). A leaf beside
``digest`` and ``media_types``, shared by image sources, the store and the pusher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from engine.digest import Digest

T = TypeVar("T")


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says of a blob."""

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] | None = None
    platform: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "size": self.size,
            "digest": str(self.digest),
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        """A descriptor from its JSON form, typed as Go reads it into OCI's struct: ValueError
        (KeyError when a required field is absent) for a field of the wrong type."""
        return cls(
            media_type=_optional(data, "mediaType", str) or "",
            digest=Digest.parse(_required(data, "digest", str)),
            size=_size(data["size"]),
            urls=tuple(_strings(_optional(data, "urls", list) or [], "urls")),
            annotations=_annotations(_optional(data, "annotations", dict)),
            platform=_optional(data, "platform", dict),
        )


#: Go's int64, the type of a descriptor's size.
_INT64_MAX = 2**63 - 1


def _optional(data: dict[str, Any], key: str, kind: type[T]) -> T | None:
    value = data.get(key)
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{key} is not {_JSON_NAMES[kind]}")
    return value


def _required(data: dict[str, Any], key: str, kind: type[T]) -> T:
    value = _optional(data, key, kind)
    if value is None:
        raise KeyError(key)
    return value


def _size(value: Any) -> int:
    # bool is an int to Python, not to JSON; 1.0 and 1e3 are floats that Go refuses for int64.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT64_MAX:
        raise ValueError(f"size {value!r} is not a byte count")
    return value


def _strings(values: list[Any], key: str) -> list[str]:
    if not all(isinstance(value, str) for value in values):
        raise ValueError(f"{key} is not a list of strings")
    return values


def _annotations(values: dict[str, Any] | None) -> dict[str, str] | None:
    if values is not None and not all(isinstance(value, str) for value in values.values()):
        raise ValueError("annotations is not an object of strings")
    return values


_JSON_NAMES: dict[type, str] = {str: "a string", list: "a list", dict: "an object"}
