"""Blobs placed during this run, so that one blob crosses the wire once per registry.

When two pushes of one run need the same layer in two repositories of a registry, the first
uploads it and the second waits, then mounts it from the first's repository.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from engine.image.base import Descriptor


@dataclass(frozen=True)
class Placed:
    blob: Descriptor
    repository: str  # path within the registry


class BlobLedger:
    def __init__(self) -> None:
        self._placed: dict[tuple[str, str], asyncio.Future[Placed]] = {}

    def find(self, registry: str, content: str) -> asyncio.Future[Placed] | None:
        return self._placed.get((registry, content))

    @contextmanager
    def claim(self, registry: str, content: str) -> Iterator[asyncio.Future[Placed]]:
        """Be the one that places ``content`` in ``registry``; others wait on the future.

        A failed or cancelled upload withdraws its claim, so the next push tries on its own.
        """
        key = (registry, content)
        future: asyncio.Future[Placed] = asyncio.get_running_loop().create_future()
        self._placed[key] = future
        try:
            yield future
        except BaseException:
            del self._placed[key]
            future.cancel()
            raise
        if not future.done():
            del self._placed[key]
            future.cancel()
