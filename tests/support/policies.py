"""Retry policies for tests: the engine's decisions, with waits short enough for a test run."""

from __future__ import annotations

from engine.retry import Backoff, RetryPolicy

#: Retries like the default policy (same attempts, same temporary errors), but its backoff stays
#: under 50 ms, so a test that provokes retries does not spend seconds asleep.
FAST = RetryPolicy(backoff=Backoff(initial=0.01, maximum=0.05))
