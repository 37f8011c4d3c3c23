"""Platforms in a multi-platform index: parse ``os/arch[/variant]`` and choose one child by it.

An OCI index (or a Docker manifest list) gives each child a ``platform`` object; ``--platform``
names one. The query must match ``os`` and ``architecture``; its variant is optional, and without
it the query may match one child only: an index with ``linux/arm/v6`` and ``linux/arm/v7`` needs
the variant to pick. Children without a platform are allowed in the index but never chosen.
This module knows descriptors' platform objects only, so the image types can build on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ImageSourceError


@dataclass(frozen=True)
class Platform:
    """What a platform query names, or what a child's descriptor says of its platform."""

    os: str
    architecture: str
    variant: str | None = None
    #: Windows children differ by it; shown so that several matches can be told apart.
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """A query ``os/arch`` or ``os/arch/variant``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ImageSourceError(
                f"invalid platform {text!r}: expected os/arch or os/arch/variant"
            )
        return cls(
            os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else None
        )

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Platform | None:
        """The platform of a descriptor's ``platform`` object; None when it names none."""
        if not isinstance(data, Mapping):
            return None
        os, architecture = data.get("os"), data.get("architecture")
        if not isinstance(os, str) or not isinstance(architecture, str) or not os:
            return None
        return cls(
            os=os,
            architecture=architecture,
            variant=_optional_string(data.get("variant")),
            os_version=_optional_string(data.get("os.version")),
        )

    def matches(self, child: Platform) -> bool:
        """Whether the child has this query's platform (any variant when the query has none)."""
        return (
            self.os == child.os
            and self.architecture == child.architecture
            and (self.variant is None or self.variant == child.variant)
        )

    def __str__(self) -> str:
        name = "/".join(p for p in (self.os, self.architecture, self.variant) if p)
        return f"{name} ({self.os_version})" if self.os_version else name


def _optional_string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def choose_platform(query: str, platforms: Sequence[Platform | None], what: str) -> int:
    """The position of the one child whose platform ``query`` names; ``what`` names the index."""
    wanted = Platform.parse(query)
    found = [i for i, p in enumerate(platforms) if p is not None and wanted.matches(p)]
    if len(found) == 1:
        return found[0]
    if found:
        hint = "; give the variant" if wanted.variant is None else ""
        raise ImageSourceError(
            f"platform {query} matches several manifests in {what}: "
            f"{_listing(platforms[i] for i in found)}{hint}"
        )
    raise ImageSourceError(f"{what} has no manifest for platform {query}; {_holdings(platforms)}")


def _listing(platforms: Iterable[Platform | None]) -> str:
    return ", ".join(str(p) for p in platforms)


def _holdings(platforms: Sequence[Platform | None]) -> str:
    named = [p for p in platforms if p is not None]
    unnamed = len(platforms) - len(named)
    listed = f"it has: {_listing(named)}" if named else "it lists no platforms"
    return f"{listed} (and {unnamed} without a platform)" if unnamed else listed
