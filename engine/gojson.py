"""JSON as Go's ``encoding/json`` marshals it: compact, UTF-8, with ``<``, ``>``, ``&`` and the
JavaScript line separators escaped even inside strings.

Two things must match Docker byte for byte: the JSON message stream its CLI reads, and the
credentials document whose digest keys the push metadata's HMAC.
"""

from __future__ import annotations

import json
from typing import Any

_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def marshal(value: Any) -> str:
    """``value`` as ``json.Marshal`` writes it (map keys in the order given, as a struct's)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # Safe on the whole text: these characters can only occur inside string values.
    return text.translate(_GO_ESCAPES)
