"""What every test gets: one anyio backend, and a check that nothing blocks the event loop.

The integration tests' fixtures (a real registry, skopeo, the CLI) are in
``tests/integration/conftest.py``; what tests and benchmarks share is in ``tests/support``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import blockbuster_ctx


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_blocking_calls_in_the_loop() -> Iterator[None]:
    """Fail any test in which Hoist's own code blocks the event loop (file or socket I/O)."""
    with blockbuster_ctx(["engine"]):
        yield
