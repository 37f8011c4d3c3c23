"""Blobs placed during this run, so that one blob crosses the wire once per registry.

When two pushes of one run need the same blob (a layer, or the config of one image pushed under
several names) in two repositories of a registry, the first uploads it and the second waits,
then mounts it from the first's repository; a third that needs it in a repository where it was
already placed needs no request at all.

Pushes of other runs through the same Engine (``hoist serve``'s clients) see what another run is
placing (``UnderWay``): a blob under way is waited for, and a blob placed is a repository to
mount from, until that run ends (``settle``). By then its push records name the blob, and later
runs find it by them, as Docker's do; no run takes another's placement as the blob being in
its own repository, since it may be deleted before this one looks: a mount finds out, and an
upload follows where it fails. Written for asyncio: a placement is a future that the push
placing the blob settles itself (no task is started), and others wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from engine.descriptor import Descriptor


@dataclass(frozen=True)
class Placement:
    blob: Descriptor
    repository: str  # path within the registry


@dataclass
class Placing:
    """What the run knows of a blob about to be placed in ``repository``.

    ``here``: it is already there (placed earlier in this run): nothing to do. Otherwise
    ``elsewhere`` names another repository of the registry that holds it, if any, and the caller
    places it, then ``record``s what it placed.
    """

    repository: str
    here: Placement | None = None
    elsewhere: Placement | None = None
    _claim: asyncio.Future[Placement] | None = field(default=None, repr=False)

    def record(self, blob: Descriptor) -> None:
        assert self._claim is not None, "a blob already here is not placed again"
        self._claim.set_result(Placement(blob, self.repository))


_Key = tuple[str, str]

#: The placements under way in every run of one Engine, by registry and content.
UnderWay = dict[_Key, asyncio.Future[Placement]]


class BlobLedger:
    def __init__(self, under_way: UnderWay | None = None) -> None:
        # The first placement of each blob in each registry, and its placement per repository.
        self._anywhere: dict[_Key, asyncio.Future[Placement]] = {}
        self._here: dict[tuple[str, str, str], asyncio.Future[Placement]] = {}
        self._under_way = under_way if under_way is not None else {}
        # This run's own entries there: never another run's placement to this one.
        self._announced: dict[_Key, asyncio.Future[Placement]] = {}

    @asynccontextmanager
    async def placing(
        self,
        registry: str,
        repository: str,
        content: str,
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> AsyncIterator[Placing]:
        """Place ``content`` in ``repository``, after any push of this run already placing it.

        Waits (``on_wait`` is told) for an earlier placement into the same repository, or else
        for the first one into another. A placement that fails, is cancelled or records nothing
        is withdrawn, and the next push tries on its own.
        """
        here_key = (registry, repository, content)
        # A placement that gave up is withdrawn at once: the next one found is a newer try.
        while (earlier := self._here.get(here_key)) is not None:
            placed = await _settled(earlier, on_wait)
            if placed is not None:
                yield Placing(repository, here=placed)
                return
        claim: asyncio.Future[Placement] = asyncio.get_running_loop().create_future()
        self._here[here_key] = claim
        anywhere_key = (registry, content)
        try:
            placed = await self._first_placement(anywhere_key, claim, on_wait)
            yield Placing(repository, elsewhere=placed, _claim=claim)
        finally:
            if not claim.done() or claim.cancelled():
                self._withdraw(here_key, anywhere_key, claim)

    async def _first_placement(
        self, key: _Key, claim: asyncio.Future[Placement], on_wait: Callable[[], None] | None
    ) -> Placement | None:
        """The first placement of the blob in the registry, once it is done; None when this
        claim is to be the first. When the first gives up, one of its waiters takes over and the
        others wait for that one: the blob still crosses the wire once."""
        while True:
            first = self._anywhere.get(key)
            if first is None or _failed(first):
                other = self._under_way.get(key)
                if (
                    other is not None
                    and other is not self._announced.get(key)
                    and not _failed(other)
                ):
                    placed = await _settled(other, on_wait)  # another run's, under way or made
                    if placed is not None:
                        return placed
                    continue
                self._anywhere[key] = claim
                self._announce(key, claim)
                return None
            placed = await _settled(first, on_wait)
            if placed is not None:
                return placed

    def _announce(self, key: _Key, claim: asyncio.Future[Placement]) -> None:
        """Show other runs this placement: while under way, and once made until ``settle``
        (one withdrawn leaves their view at once)."""
        self._under_way[key] = claim
        self._announced[key] = claim

    def settle(self) -> None:
        """The run has ended, its push records written: other runs no longer see what it
        placed (they find it by those records)."""
        for key, claim in self._announced.items():
            if self._under_way.get(key) is claim:
                del self._under_way[key]
        self._announced.clear()

    def disown(self, registry: str, repository: str) -> None:
        """Forget every finished placement into ``repository``: the registry refused a manifest
        there for a blob this run had placed, so none of them is evidence any more. Later pushes
        of the run find out again (HEAD, mount, upload); placements under way are left alone."""
        for here_key, placed in list(self._here.items()):
            if here_key[:2] == (registry, repository) and placed.done():
                del self._here[here_key]
        for anywhere_key, first in list(self._anywhere.items()):
            if anywhere_key[0] == registry and _placed_in(first, repository):
                del self._anywhere[anywhere_key]

    def _withdraw(
        self, here_key: tuple[str, str, str], anywhere_key: _Key, claim: asyncio.Future[Placement]
    ) -> None:
        if self._here.get(here_key) is claim:
            del self._here[here_key]
        if self._anywhere.get(anywhere_key) is claim:
            del self._anywhere[anywhere_key]
        if self._under_way.get(anywhere_key) is claim:
            del self._under_way[anywhere_key]
        claim.cancel()


def _placed_in(future: asyncio.Future[Placement], repository: str) -> bool:
    return future.done() and not _failed(future) and future.result().repository == repository


def _failed(future: asyncio.Future[Placement]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


async def _settled(
    placement: asyncio.Future[Placement], on_wait: Callable[[], None] | None
) -> Placement | None:
    """Wait for another push's placement; None if it gave up (failed or cancelled)."""
    if not placement.done():
        if on_wait is not None:
            on_wait()
        await asyncio.wait({placement})
    if placement.cancelled() or placement.exception() is not None:
        return None
    return placement.result()
