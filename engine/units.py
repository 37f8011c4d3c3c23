"""Sizes as people write them: ``16MiB``, ``10MB``, ``512k``, ``1048576``."""

from __future__ import annotations

import re

from engine.errors import UsageError

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Bytes in ``text``: ``KiB``/``MiB`` are powers of 1024, ``kB``/``MB`` of 1000, and a bare
    ``k``/``m`` of 1024 as Docker's flags read them."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise UsageError(f"invalid size {text!r}: use e.g. 16MiB, 10MB or 1048576")
    number, prefix, binary, unit_b = match.groups()
    power = _POWERS[prefix.lower()]
    base = 1000 if (unit_b and not binary) else 1024
    value = int(float(number) * base**power)
    if value < 1:
        raise UsageError(f"invalid size {text!r}: must be at least one byte")
    return value
