"""A batch's summary: one row per image of ``hoist push A B …``, the table printed after it.

A batch pushed in this process and one pushed through ``hoist serve`` print the same table. A
daemon's JSON message stream carries no push results, so the daemon ends a batch's stream with
these rows as one ``aux`` object of its own (``{"aux": {"Summary": [...]}}``).
"""

from __future__ import annotations

from typing import Any

from engine.errors import DaemonStreamError
from engine.progress.units import human_size
from engine.value import Value

#: The table's header.
COLUMNS = ("IMAGE", "DIGEST", "PUSHED", "MOUNTED", "EXISTS", "SENT")

#: The aux key of the daemon's last message in a batch's stream.
AUX_KEY = "Summary"


class PushSummary(Value):
    """One image of a batch: the manifest's ``digest`` and its layers' outcomes once pushed, or
    the ``error`` that stopped it (its message). A ``Value``: a batch's client of ``hoist serve``
    reads these rows."""

    __slots__ = ("digest", "error", "exists", "mounted", "pushed", "ref", "sent")
    ref: str
    digest: str
    pushed: int
    mounted: int
    exists: int
    #: Body bytes sent for its layers.
    sent: int
    error: str | None

    def __init__(
        self,
        ref: str,
        digest: str = "",
        pushed: int = 0,
        mounted: int = 0,
        exists: int = 0,
        sent: int = 0,
        error: str | None = None,
    ) -> None:
        super().__init__(ref, digest, pushed, mounted, exists, sent, error)

    def row(self) -> tuple[str, ...]:
        if self.error is not None:
            return (self.ref, "failed", "", "", "", "")
        counts = (self.pushed, self.mounted, self.exists)
        return (self.ref, self.digest[:19], *map(str, counts), human_size(self.sent))

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"Ref": self.ref}
        if self.error is not None:
            document["Error"] = self.error
            return document
        document.update(
            Digest=self.digest,
            Pushed=self.pushed,
            Mounted=self.mounted,
            Exists=self.exists,
            Sent=self.sent,
        )
        return document

    @classmethod
    def from_json(cls, document: object) -> PushSummary:
        """A row as ``to_json`` wrote it; a ``DaemonStreamError`` for anything else."""
        if not isinstance(document, dict) or not isinstance(document.get("Ref"), str):
            raise DaemonStreamError("the daemon sent a batch summary row Hoist cannot read")
        error = document.get("Error")
        if error is not None:
            return cls(document["Ref"], error=str(error))
        digest = document.get("Digest")
        if not isinstance(digest, str):
            raise DaemonStreamError("the daemon sent a batch summary row Hoist cannot read")
        pushed, mounted, exists, sent = (
            _count(document.get(key)) for key in ("Pushed", "Mounted", "Exists", "Sent")
        )
        return cls(document["Ref"], digest, pushed, mounted, exists, sent)


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise DaemonStreamError("the daemon sent a batch summary row Hoist cannot read")


def summary_message(rows: list[PushSummary]) -> dict[str, Any]:
    """The last message of a batch's stream through ``hoist serve``."""
    return {"progressDetail": {}, "aux": {AUX_KEY: [row.to_json() for row in rows]}}


def summary_in(message: object) -> list[PushSummary] | None:
    """The rows ``message`` carries if it is a batch's summary, else None."""
    if not isinstance(message, dict):
        return None
    aux = message.get("aux")
    if not isinstance(aux, dict) or AUX_KEY not in aux:
        return None
    rows = aux[AUX_KEY]
    if not isinstance(rows, list):
        raise DaemonStreamError("the daemon sent a batch summary Hoist cannot read")
    return [PushSummary.from_json(row) for row in rows]
