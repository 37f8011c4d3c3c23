"""What the benchmarks report: medians, extremes, throughput, the ratio to the matching peer,
and the raw JSON beside it.

Medians, not means: one run disturbed by the machine (a page-cache flush, another process)
moves a mean but not a median of five. Min and max are shown so the spread stays visible.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.process import BenchmarkError, interrupt_on_sigterm, run_checked

MIB = 1 << 20


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
    #: What the registry's blob store held afterwards, where the benchmark measures it.
    stored_blobs: int | None = None
    stored_bytes: int | None = None
    #: The child's user + system CPU seconds, where the benchmark measures them.
    cpu_seconds: float | None = None
    #: The registry's CPU seconds over the same commands, where the benchmark measures them.
    registry_cpu_seconds: float | None = None
    #: Blob bytes the registry received in uploads, and the requests it answered.
    sent_bytes: int | None = None
    requests: int | None = None

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
    #: Medians of the runs' stored blobs and bytes (MiB); None where they were not measured.
    stored_blobs: float | None = None
    stored_mib: float | None = None
    #: Medians of the runs' CPU seconds (the client's, the registry's), blob MiB sent and
    #: requests; None where not measured.
    cpu_seconds: float | None = None
    registry_cpu_seconds: float | None = None
    sent_mib: float | None = None
    requests: float | None = None

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
        stored_blobs=_median_of([r.stored_blobs for r in runs]),
        stored_mib=_median_of([r.stored_bytes / MIB for r in runs if r.stored_bytes is not None]),
        cpu_seconds=_median_of([r.cpu_seconds for r in runs]),
        registry_cpu_seconds=_median_of([r.registry_cpu_seconds for r in runs]),
        sent_mib=_median_of([r.sent_bytes / MIB for r in runs if r.sent_bytes is not None]),
        requests=_median_of([r.requests for r in runs]),
    )


def _median_of(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


_HEADERS = (
    "contender",
    "median s",
    "min–max s",
    "MiB/s",
    "peak RSS MiB",
    "min–max MiB",
    "vs skopeo",
)
#: Shown only when some run measured the registry's blob store.
_STORED_HEADERS = ("stored MiB", "blobs")


def table(summaries: Sequence[Summary], *, peer: str = "skopeo") -> str:
    """A plain-text table, one line per contender, columns aligned; ``peer`` names the peers in
    the ratio column's header."""
    stored = any(s.stored_mib is not None for s in summaries)
    base = (*_HEADERS[:-1], f"vs {peer}")
    headers = (*base, *_STORED_HEADERS) if stored else base
    return format_table([headers, *(_cells(s, stored=stored) for s in summaries)])


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` (the first the headers) as aligned columns under a rule; an empty row is a
    blank line between groups."""
    width = max(len(row) for row in rows)
    widths = [max(len(row[i]) for row in rows if row) for i in range(width)]
    lines = [_line(row, widths) if row else "" for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cells(s: Summary, *, stored: bool) -> tuple[str, ...]:
    ratio = f"{s.peer_ratio:.2f}×" if s.peer_ratio is not None else "—"
    cells = (
        s.contender.label,
        f"{s.median_seconds:.2f}",
        f"{s.min_seconds:.2f}–{s.max_seconds:.2f}",
        f"{s.mib_per_second:.0f}",
        f"{s.median_rss_mib:.0f}",
        f"{s.min_rss_mib:.0f}–{s.max_rss_mib:.0f}",
        ratio,
    )
    if not stored:
        return cells
    return (*cells, _optional(s.stored_mib, ".1f"), _optional(s.stored_blobs, ".0f"))


def _optional(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "—"


def _line(row: Sequence[str], widths: Sequence[int]) -> str:
    # Every column but the first (the label) holds numbers: right-aligned.
    cells = (
        cell.rjust(w) if i else cell.ljust(w)
        for i, (cell, w) in enumerate(zip(row, widths, strict=True))
    )
    return "  ".join(cells).rstrip()


# --- around the table -------------------------------------------------------------------------


def say(text: str) -> None:
    """Progress of the benchmark itself, on stderr; the table goes to stdout."""
    print(text, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """The machine and the peers' versions, recorded beside the runs."""

    def version(argv: list[str]) -> str:
        try:
            return run_checked(argv, timeout=30).strip()
        except (BenchmarkError, OSError) as exc:
            return f"unknown ({exc})"

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "skopeo": version(["skopeo", "--version"]),
        "registry": version(["docker-registry", "--version"]),
    }


def write_results(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    say(f"raw runs written to {path}")


#: Where every benchmark writes its raw runs (git-ignored).
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Outcome:
    """How a benchmark ended: its exit status, and its result where it has one."""

    code: int
    result: dict[str, Any] | None = None
    out: Path | None = None


def run_benchmark(
    kind: str,
    work_dir: Path | None,
    out: Path | None,
    body: Callable[[Path], dict[str, Any]],
    *,
    stopped: str = "registries stopped",
    aborts: tuple[type[Exception], ...] = (BenchmarkError,),
) -> Outcome:
    """The frame every benchmark runs in: ``body`` in a temporary directory (gone afterwards,
    also on Ctrl-C or SIGTERM), its result stamped with the start, the machine and the time it
    took, and written as JSON (default ``results/<kind>-<UTC time>.json``). One line and exit
    status 1 for a run that went wrong (``aborts``), 130 for an interrupted one."""
    interrupt_on_sigterm()
    started = datetime.now(UTC)
    out = out or RESULTS / f"{kind}-{started:%Y%m%d-%H%M%S}.json"
    try:
        with tempfile.TemporaryDirectory(prefix=f"hoist-{kind}-", dir=work_dir) as tmp:
            clock = time.monotonic()
            result = body(Path(tmp))
            result |= {"started": started.isoformat(), "machine": machine()}
            result["elapsed_seconds"] = round(time.monotonic() - clock, 1)
    except aborts as exc:
        say(f"benchmark aborted:\n{exc}")
        return Outcome(1)
    except KeyboardInterrupt:
        say(f"interrupted; {stopped}, temporary files removed")
        return Outcome(130)
    write_results(out, result)
    return Outcome(0, result, out)
