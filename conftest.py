"""What every test gets: one anyio backend, a check that nothing blocks the event loop, and
warnings as errors in the Python processes the tests start (the CLI, the demo, the daemon), as
the test command makes them in its own (``python3 -X dev -W error``). Not dev mode there: its
asyncio debug logs a slow step on stderr, which a loaded machine makes, and the tests read
stderr line by line.

The integration tests' fixtures (a real registry, skopeo, the CLI) are in
``tests/integration/conftest.py``; what tests and benchmarks share is in ``tests/support``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from blockbuster import blockbuster_ctx

# Inherited by every child process; set here, not per test, as fixtures start processes too.
os.environ.setdefault("PYTHONWARNINGS", "error")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_blocking_calls_in_the_loop() -> Iterator[None]:
    """Fail any test in which Hoist's own code blocks the event loop (file or socket I/O)."""
    with blockbuster_ctx(["engine"]):
        yield
