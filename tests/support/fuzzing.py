"""How many examples a Hypothesis search of bad input runs: in CI a fixed set, derandomized so
that every run tries the same ones; with ``HOIST_FUZZ_EXAMPLES=N``, N random ones."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("HOIST_FUZZ_EXAMPLES", "0"))


def fuzz_settings(ci_examples: int) -> settings:
    """Settings for a search that runs ``ci_examples`` in CI (files on disk: no deadline)."""
    return settings(
        max_examples=EXAMPLES or ci_examples,
        derandomize=not EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
