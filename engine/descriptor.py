"""``Descriptor``: what a manifest says of a blob (OCI's content descriptor). A leaf beside
``digest`` and ``media_types``, shared by image sources, the store and the pusher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.digest import Digest


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
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=Digest.parse(str(data["digest"])),
            size=int(data["size"]),
            urls=tuple(data.get("urls") or ()),
            annotations=data.get("annotations"),
            platform=data.get("platform"),
        )
