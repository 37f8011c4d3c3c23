"""The run's blob ledger: who places a blob, who waits, who mounts, who needs nothing."""

from __future__ import annotations

import asyncio

import pytest

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.push.ledger import BlobLedger, Placement, Placing, UnderWay

pytestmark = pytest.mark.anyio

REGISTRY = "http://127.0.0.1:5000"
BLOB = Descriptor("application/octet-stream", Digest("sha256:" + "ab" * 32), 3)
CONTENT = str(BLOB.digest)


async def _place(
    ledger: BlobLedger, repository: str, seen: list[tuple[str, Placing]], go: asyncio.Event
) -> None:
    async with ledger.placing(REGISTRY, repository, CONTENT) as placement:
        seen.append((repository, placement))
        if placement.here is None:
            await go.wait()
            placement.record(BLOB)


async def test_the_first_places_others_mount_or_find_it_here(anyio_backend: str) -> None:
    ledger, seen, go = BlobLedger(), [], asyncio.Event()
    first = asyncio.create_task(_place(ledger, "a", seen, go))
    await asyncio.sleep(0)  # the first claims before the others look
    others = [asyncio.create_task(_place(ledger, repo, seen, go)) for repo in ("b", "a", "b")]
    await asyncio.sleep(0)
    go.set()
    await asyncio.gather(first, *others)

    by_order = [(repo, p.here, p.elsewhere) for repo, p in seen]
    in_a = Placement(BLOB, "a")
    assert by_order[0] == ("a", None, None)
    # The second "a" waits for the first and needs nothing; the first "b" mounts from "a";
    # the second "b" waits for the first "b" and needs nothing either.
    assert sorted(by_order[1:], key=repr) == sorted(
        [("a", in_a, None), ("b", None, in_a), ("b", Placement(BLOB, "b"), None)], key=repr
    )


async def test_a_placement_that_gives_up_is_withdrawn(anyio_backend: str) -> None:
    ledger = BlobLedger()
    with pytest.raises(RuntimeError):
        async with ledger.placing(REGISTRY, "a", CONTENT):
            raise RuntimeError("upload failed")

    async with ledger.placing(REGISTRY, "b", CONTENT) as retry:
        assert (retry.here, retry.elsewhere) == (None, None)
        retry.record(BLOB)
    async with ledger.placing(REGISTRY, "a", CONTENT) as again:
        assert again.here is None and again.elsewhere is not None
        assert again.elsewhere.repository == "b"


async def test_when_the_first_gives_up_one_waiter_takes_over(anyio_backend: str) -> None:
    """The first upload fails while two other repositories wait for it: one of them uploads,
    the other mounts from it. The blob still crosses the wire once."""
    ledger, fail = BlobLedger(), asyncio.Event()
    seen: dict[str, Placing] = {}

    async def first() -> None:
        with pytest.raises(RuntimeError):
            async with ledger.placing(REGISTRY, "a", CONTENT) as placement:
                seen["a"] = placement
                await fail.wait()
                raise RuntimeError("upload failed")

    async def waiter(repository: str) -> None:
        async with ledger.placing(REGISTRY, repository, CONTENT) as placement:
            seen[repository] = placement
            if placement.elsewhere is None:
                placement.record(BLOB)

    tasks = [asyncio.create_task(first())]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(waiter(repo)) for repo in ("b", "c")]
    await asyncio.sleep(0)
    fail.set()
    await asyncio.gather(*tasks)

    uploaders = [repo for repo in ("b", "c") if seen[repo].elsewhere is None]
    assert len(uploaders) == 1
    mounter = ({"b", "c"} - set(uploaders)).pop()
    assert seen[mounter].elsewhere == Placement(BLOB, uploaders[0])


async def test_a_disowned_repository_is_no_evidence_for_later_pushes(anyio_backend: str) -> None:
    """A manifest refused in "a" for a blob the run placed there: nobody trusts "a" any more."""
    ledger = BlobLedger()
    for repository in ("a", "b"):
        async with ledger.placing(REGISTRY, repository, CONTENT) as placement:
            if placement.here is None:
                placement.record(BLOB)
    ledger.disown(REGISTRY, "a")

    async with ledger.placing(REGISTRY, "a", CONTENT) as again:
        assert again.here is None, "the refused repository still counted as holding it"
        assert again.elsewhere is None or again.elsewhere.repository != "a"
        again.record(BLOB)
    async with ledger.placing(REGISTRY, "b", CONTENT) as other:
        assert other.here == Placement(BLOB, "b")  # another repository's placement still stands


async def test_another_run_waits_for_a_placement_under_way_and_mounts_from_it_till_it_ends(
    anyio_backend: str,
) -> None:
    under_way: UnderWay = {}
    mine, theirs = BlobLedger(under_way), BlobLedger(under_way)
    seen: list[tuple[str, Placing]] = []
    go = asyncio.Event()

    first = asyncio.create_task(_place(mine, "a", seen, go))
    await asyncio.sleep(0)  # placing into "a" now, in the first run
    second = asyncio.create_task(_place(theirs, "b", seen, go))
    await asyncio.sleep(0)
    go.set()
    await asyncio.gather(first, second)

    assert [(repo, p.elsewhere) for repo, p in seen] == [
        ("a", None),
        ("b", Placement(BLOB, "a")),  # waited, then mounts from the other run's repository
    ]
    # Before the first run has written its records, a run that comes late still mounts from
    # it: nothing else would tell it where the blob went.
    late, late_seen = BlobLedger(under_way), []
    await _place(late, "c", late_seen, go)
    assert (late_seen[0][1].here, late_seen[0][1].elsewhere) == (None, Placement(BLOB, "a"))

    for ledger in (mine, theirs, late):
        ledger.settle()
    assert under_way == {}, "an ended run's placements are no other run's evidence"
    later, later_seen = BlobLedger(under_way), []
    await _place(later, "d", later_seen, go)
    assert later_seen[0][1].elsewhere is None, "a later run finds out for itself"


async def test_a_placement_that_fails_leaves_other_runs_view_at_once(anyio_backend: str) -> None:
    under_way: UnderWay = {}
    mine, theirs = BlobLedger(under_way), BlobLedger(under_way)
    with pytest.raises(RuntimeError):
        async with mine.placing(REGISTRY, "a", CONTENT):
            raise RuntimeError("the upload broke")
    assert under_way == {}
    seen: list[tuple[str, Placing]] = []
    await _place(theirs, "b", seen, _set_event())
    assert seen[0][1].elsewhere is None, "nothing to mount from: this run places it itself"


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event
