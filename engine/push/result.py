"""What a push returns to a library caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from engine.digest import Digest


class LayerOutcome(StrEnum):
    """How a layer got into the repository: sent, found there ("Layer already exists"), or
    mounted from another repository of the registry."""

    PUSHED = "pushed"
    EXISTS = "exists"
    MOUNTED = "mounted"


@dataclass(frozen=True)
class LayerResult:
    """One layer of a push: the blob the manifest names (``digest``, ``size``, ``media_type``)
    and how it got there."""

    digest: Digest
    size: int
    media_type: str
    outcome: LayerOutcome
    diff_id: Digest | None = None
    #: Body bytes this push sent for the layer (0 when it already existed or was mounted).
    bytes_sent: int = 0
    #: The repository it was mounted from.
    source: str | None = None
    #: The layer's identity, the one its ``LayerProgress`` events carry: its diff ID, or its
    #: blob's digest when the source does not know the diff ID.
    layer: Digest = field(kw_only=True)

    @property
    def id(self) -> str:
        """The 12 hex characters Docker shows for the layer, as its events' ``id``."""
        return self.layer.short


@dataclass(frozen=True)
class PushResult:
    """One pushed tag: ``repository`` (``HOST/REPO``), ``tag``, and the manifest's ``digest``,
    ``size`` and ``media_type`` as the registry holds it (``hoist push`` prints
    ``TAG: digest: DIGEST size: SIZE``); ``layers`` in the manifest's order."""

    repository: str  # HOST/REPO
    tag: str
    digest: Digest
    size: int  # manifest bytes
    media_type: str
    #: In manifest order; a multi-platform push lists each child's layers in turn.
    layers: list[LayerResult] = field(default_factory=list)

    @property
    def bytes_sent(self) -> int:
        return sum(layer.bytes_sent for layer in self.layers)
