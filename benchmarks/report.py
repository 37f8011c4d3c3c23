"""Summaries of benchmark runs: medians, extremes, throughput and the ratio to the matching peer.

Medians, not means: one run disturbed by the machine (a page-cache flush, another process)
moves a mean but not a median of five. Min and max are shown so the spread stays visible.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Contender:
    """One way of pushing the image; ``peer`` is the key of the contender it is compared with."""

    key: str
    label: str
    peer: str | None = None


@dataclass(frozen=True)
class Run:
    """One cold push by one contender."""

    round: int
    contender: str
    repository: str
    seconds: float
    peak_rss_mib: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    """A contender's runs, reduced."""

    contender: Contender
    runs: int
    median_seconds: float
    min_seconds: float
    max_seconds: float
    mib_per_second: float
    median_rss_mib: float
    min_rss_mib: float
    max_rss_mib: float
    peer_ratio: float | None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["contender"] = self.contender.key
        data["label"] = self.contender.label
        data["peer"] = self.contender.peer
        return data


def summarise(
    contenders: Sequence[Contender], runs: Sequence[Run], payload_mib: float
) -> list[Summary]:
    """One summary per contender that has runs; the peer ratio is peer time / own time."""
    medians = {
        c.key: statistics.median(r.seconds for r in runs if r.contender == c.key)
        for c in contenders
        if any(r.contender == c.key for r in runs)
    }
    return [
        _summary(c, [r for r in runs if r.contender == c.key], payload_mib, medians)
        for c in contenders
        if c.key in medians
    ]


def _summary(
    contender: Contender, runs: Sequence[Run], payload_mib: float, medians: dict[str, float]
) -> Summary:
    seconds = [r.seconds for r in runs]
    rss = [r.peak_rss_mib for r in runs]
    median = medians[contender.key]
    peer = medians.get(contender.peer) if contender.peer else None
    return Summary(
        contender=contender,
        runs=len(runs),
        median_seconds=median,
        min_seconds=min(seconds),
        max_seconds=max(seconds),
        mib_per_second=payload_mib / median,
        median_rss_mib=statistics.median(rss),
        min_rss_mib=min(rss),
        max_rss_mib=max(rss),
        peer_ratio=peer / median if peer is not None else None,
    )


_HEADERS = (
    "contender",
    "median s",
    "min–max s",
    "MiB/s",
    "peak RSS MiB",
    "min–max MiB",
    "vs skopeo",
)
_RIGHT_ALIGNED = frozenset(range(1, len(_HEADERS)))


def table(summaries: Sequence[Summary]) -> str:
    """A plain-text table, one line per contender, columns aligned."""
    rows = [_HEADERS, *(_cells(s) for s in summaries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]
    lines = [_line(row, widths) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cells(s: Summary) -> tuple[str, ...]:
    ratio = f"{s.peer_ratio:.2f}×" if s.peer_ratio is not None else "—"
    return (
        s.contender.label,
        f"{s.median_seconds:.2f}",
        f"{s.min_seconds:.2f}–{s.max_seconds:.2f}",
        f"{s.mib_per_second:.0f}",
        f"{s.median_rss_mib:.0f}",
        f"{s.min_rss_mib:.0f}–{s.max_rss_mib:.0f}",
        ratio,
    )


def _line(row: Sequence[str], widths: Sequence[int]) -> str:
    cells = (
        cell.rjust(w) if i in _RIGHT_ALIGNED else cell.ljust(w)
        for i, (cell, w) in enumerate(zip(row, widths, strict=True))
    )
    return "  ".join(cells).rstrip()
