"""``docker push``'s output without a terminal, read back line by line: the repository line,
one ``<12 hex>: STATUS`` line per layer and step, and ``TAG: digest: sha256:… size: N`` last.

The reference test compares dockerd's and ``hoist serve``'s with it, and the serve benchmark
checks that a cold push pushed every layer and a no-op push found every one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["EXISTS", "PUSHED", "PushOutput", "parse_push"]

PUSHED = "Pushed"
EXISTS = "Layer already exists"

_REPOSITORY_LINE = re.compile(r"The push refers to repository \[(?P<repository>[^\]]+)\]")
_LAYER_LINE = re.compile(r"(?P<id>[0-9a-f]{12}): (?P<status>.+)")
_DIGEST_LINE = re.compile(
    r"(?P<tag>[^\s:]+): digest: (?P<digest>sha256:[0-9a-f]{64}) size: (?P<size>\d+)"
)


@dataclass(frozen=True)
class PushOutput:
    """What ``docker push`` printed (without a terminal), line by line, read back."""

    repository: str
    #: The layer IDs in the order the output first names them.
    layer_ids: list[str]
    #: Each layer's last status, in that order.
    final_statuses: list[str]
    tag: str
    digest: str
    size: int


def parse_push(stdout: str) -> PushOutput:
    """Read ``docker push``'s output; ValueError on any line of another shape."""
    lines = stdout.splitlines()
    if len(lines) < 2:
        raise ValueError(f"not the output of a push:\n{stdout}")
    first = _REPOSITORY_LINE.fullmatch(lines[0])
    last = _DIGEST_LINE.fullmatch(lines[-1])
    if first is None or last is None:
        raise ValueError(f"not the output of a push:\n{stdout}")
    statuses: dict[str, str] = {}
    for line in lines[1:-1]:
        layer = _LAYER_LINE.fullmatch(line)
        if layer is None:
            raise ValueError(f"unexpected line {line!r} in:\n{stdout}")
        statuses[layer["id"]] = layer["status"]
    return PushOutput(
        repository=first["repository"],
        layer_ids=list(statuses),
        final_statuses=list(statuses.values()),
        tag=last["tag"],
        digest=last["digest"],
        size=int(last["size"]),
    )
