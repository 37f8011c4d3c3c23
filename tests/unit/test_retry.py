"""Retry policy: the classification table, backoff, Retry-After, the per-host gate, the loop."""

from __future__ import annotations

import asyncio
import errno
import random
import ssl
from functools import partial

import aiohttp
import anyio
import anyio.lowlevel
import pytest

from engine.digest import Digest
from engine.errors import (
    ERROR_CODES,
    STATUS_CLASSES,
    BlobUploadInvalidError,
    BlobUploadUnknownError,
    DeniedError,
    DigestMismatchError,
    ImageSourceError,
    NameUnknownError,
    RegistryResponseError,
    TooManyRequestsError,
    TransportError,
    UnauthorizedError,
    UnsupportedError,
)
from engine.registry.throttle import HostGate
from engine.retry import (
    DEFAULT,
    Attempts,
    Backoff,
    Remedy,
    RetryPolicy,
    count_down,
    parse_retry_after,
    retry_after_of,
    retrying,
)
from tests.support.policies import FAST

TIMEOUT = 5
SESSION = "https://registry.test/v2/team/app/blobs/uploads/0f1e2d?_state=abc"
IMF_EPOCH = "Sun, 06 Nov 1994 08:49:37 GMT"
EPOCH = 784111777.0  # IMF_EPOCH as a POSIX timestamp


def answer(
    status: int, code: str | None = None, url: str = "", retry_after: float | None = None
) -> RegistryResponseError:
    """A registry error answer, typed from its code or status as the client decodes it."""
    cls = _class_for(code, status)
    return cls("registry said no", status=status, code=code, url=url, retry_after=retry_after)


def _class_for(code: str | None, status: int) -> type[RegistryResponseError]:
    return ERROR_CODES.get(code or "") or STATUS_CLASSES.get(status) or RegistryResponseError


def transport_error(cause: BaseException) -> TransportError:
    """A TransportError raised from ``cause``, as the client wraps socket failures."""
    try:
        raise TransportError(f"PATCH {SESSION}: {cause}") from cause
    except TransportError as wrapped:
        return wrapped


def digest_mismatch() -> DigestMismatchError:
    return DigestMismatchError("layer", Digest.of(b"expected"), Digest.of(b"actual"))


TEMPORARY: list[tuple[str, BaseException]] = [
    ("connection reset", transport_error(ConnectionResetError(errno.ECONNRESET, "reset"))),
    ("server disconnected", transport_error(aiohttp.ServerDisconnectedError())),
    ("timeout wrapped", transport_error(TimeoutError())),
    ("timeout bare", TimeoutError()),
    ("connection refused bare", ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
    ("408", answer(408)),
    ("429", answer(429)),
    ("TOOMANYREQUESTS", answer(429, "TOOMANYREQUESTS")),
    ("500", answer(500)),
    ("500 UNKNOWN", answer(500, "UNKNOWN")),
    ("502", answer(502)),
    ("503", answer(503)),
    ("504", answer(504)),
    ("BLOB_UPLOAD_UNKNOWN", answer(404, "BLOB_UPLOAD_UNKNOWN", SESSION)),
    ("BLOB_UPLOAD_INVALID", answer(404, "BLOB_UPLOAD_INVALID", SESSION)),
    ("bare 404 on a session", answer(404, None, SESSION)),
    ("RANGE_INVALID", answer(416, "RANGE_INVALID", SESSION)),
    ("short Retry-After", answer(429, retry_after=60)),
]

PERMANENT: list[tuple[str, BaseException]] = [
    ("501", answer(501)),
    ("505", answer(505)),
    ("400", answer(400)),
    ("unauthorized after re-auth", answer(401)),
    ("UNAUTHORIZED", answer(401, "UNAUTHORIZED")),
    ("DENIED", answer(403, "DENIED")),
    ("NAME_UNKNOWN", answer(404, "NAME_UNKNOWN")),
    ("NAME_UNKNOWN on a session", answer(404, "NAME_UNKNOWN", SESSION)),
    ("UNSUPPORTED", answer(405, "UNSUPPORTED")),
    ("DIGEST_INVALID", answer(400, "DIGEST_INVALID", SESSION)),
    ("DENIED despite 503", answer(503, "DENIED")),
    ("bare 404 on a blob", answer(404, None, "https://registry.test/v2/a/blobs/sha256:00")),
    (
        "bare 404 on the uploads POST",
        answer(404, None, "https://registry.test/v2/a/blobs/uploads/"),
    ),
    ("Retry-After beyond the limit", answer(429, retry_after=3600)),
    ("digest mismatch", digest_mismatch()),
    ("digest mismatch inside a transport error", transport_error(digest_mismatch())),
    ("bad source", ImageSourceError("truncated archive")),
    ("disk full", OSError(errno.ENOSPC, "No space left on device")),
    ("quota", OSError(errno.EDQUOT, "Disk quota exceeded")),
    ("disk full inside", transport_error(OSError(errno.ENOSPC, "No space left on device"))),
    ("certificate", transport_error(ssl.SSLCertVerificationError("certificate verify failed"))),
    ("other OSError", FileNotFoundError(errno.ENOENT, "gone")),
    ("a bug", KeyError("oops")),
    ("cancellation", asyncio.CancelledError()),
    ("Ctrl-C", KeyboardInterrupt()),
]


@pytest.mark.parametrize("error", [e for _, e in TEMPORARY], ids=[n for n, _ in TEMPORARY])
def test_temporary_errors_are_retried(error: BaseException) -> None:
    assert DEFAULT.is_temporary(error)


@pytest.mark.parametrize("error", [e for _, e in PERMANENT], ids=[n for n, _ in PERMANENT])
def test_permanent_errors_are_not_retried(error: BaseException) -> None:
    assert not DEFAULT.is_temporary(error)


def test_the_decoded_classes_classify_like_their_codes() -> None:
    assert not DEFAULT.is_temporary(UnauthorizedError("no", status=401))
    assert not DEFAULT.is_temporary(DeniedError("no", status=403))
    assert not DEFAULT.is_temporary(NameUnknownError("no", status=404))
    assert not DEFAULT.is_temporary(UnsupportedError("no", status=405))
    assert DEFAULT.is_temporary(TooManyRequestsError("later", status=429))
    assert DEFAULT.is_temporary(BlobUploadUnknownError("gone", status=404))


def test_a_group_is_temporary_only_when_every_member_is() -> None:
    reset = transport_error(ConnectionResetError())
    assert DEFAULT.is_temporary(ExceptionGroup("layers", [reset, answer(503)]))
    assert not DEFAULT.is_temporary(ExceptionGroup("layers", [reset, answer(403, "DENIED")]))


@pytest.mark.parametrize(
    "error",
    [
        BlobUploadUnknownError("gone", status=404, url=SESSION),
        BlobUploadInvalidError("cancelled", status=404, url=SESSION),
        answer(404, None, SESSION),
        ExceptionGroup("one", [answer(404, "BLOB_UPLOAD_UNKNOWN")]),
    ],
    ids=["BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID", "bare 404 on the session", "in a group"],
)
def test_a_lost_session_asks_for_a_new_one(error: BaseException) -> None:
    assert Attempts(DEFAULT).upload_failed(error, chunked=False).remedy is Remedy.NEW_SESSION


@pytest.mark.parametrize(
    "error",
    [
        answer(503, None, SESSION),
        answer(429, None, SESSION),
        answer(416, "RANGE_INVALID", SESSION),
        answer(404, "NAME_UNKNOWN", SESSION),
        answer(404, None, "https://registry.test/v2/a/blobs/uploads/"),
        transport_error(ConnectionResetError()),
    ],
    ids=["503", "429", "RANGE_INVALID", "NAME_UNKNOWN", "404 on POST", "reset"],
)
def test_a_session_that_survives_is_kept(error: BaseException) -> None:
    assert Attempts(DEFAULT).upload_failed(error, chunked=False).remedy is not Remedy.NEW_SESSION


def test_backoff_grows_by_its_factor_without_jitter() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, maximum=100.0, jitter=0.0)
    rng = random.Random(1)
    delays = [backoff.delay(attempt, rng) for attempt in range(1, 6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_backoff_stops_at_its_maximum_even_with_jitter_and_huge_attempts() -> None:
    backoff = Backoff(initial=1.0, factor=3.0, maximum=30.0, jitter=0.5)
    rng = random.Random(7)
    delays = [backoff.delay(attempt, rng) for attempt in (5, 6, 50, 5000)]
    assert all(15.0 <= delay <= 30.0 for delay in delays)


def test_jitter_stays_within_its_bounds_and_varies() -> None:
    backoff = Backoff(initial=4.0, factor=2.0, maximum=1000.0, jitter=0.1)
    rng = random.Random(42)
    delays = [backoff.delay(2, rng) for _ in range(200)]
    assert all(7.2 <= delay <= 8.8 for delay in delays)
    assert len(set(delays)) > 100


def test_the_same_seed_gives_the_same_delays() -> None:
    first = [Backoff().delay(n, random.Random(3)) for n in range(1, 5)]
    second = [Backoff().delay(n, random.Random(3)) for n in range(1, 5)]
    assert first == second


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1.0}, {"maximum": 0.5}, {"factor": 0.5}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_nonsense_backoffs_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        Backoff().delay(0, random.Random(0))
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_fast_policy_decides_like_the_default_but_waits_little() -> None:
    rng = random.Random(0)
    assert FAST.attempts == DEFAULT.attempts
    assert all(FAST.backoff.delay(n, rng) <= 0.05 for n in range(1, 10))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        (IMF_EPOCH, 30.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 30.0),
        ("Sun Nov  6 08:49:37 1994", 30.0),
    ],
    ids=["seconds", "zero", "IMF-fixdate", "RFC 850", "asctime"],
)
def test_retry_after_in_both_forms(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=EPOCH - 30) == seconds


def test_retry_after_date_in_the_past_means_now() -> None:
    assert parse_retry_after(IMF_EPOCH, now=EPOCH + 3600) == 0.0


@pytest.mark.parametrize("value", ["", "soon", "-5", "1.5", "Sun, 31 Feb 1994 08:49:37 GMT", "²"])
def test_retry_after_garbage_is_ignored(value: str) -> None:
    assert parse_retry_after(value, now=EPOCH) is None


def test_delay_is_the_backoff_when_retry_after_is_shorter() -> None:
    policy = RetryPolicy(backoff=Backoff(initial=2.0, jitter=0.0))
    assert policy.delay_for(answer(429, retry_after=1), 1, random.Random(0)) == 2.0


def test_delay_is_retry_after_when_it_is_longer() -> None:
    policy = RetryPolicy(backoff=Backoff(initial=2.0, jitter=0.0))
    assert policy.delay_for(answer(429, retry_after=9), 1, random.Random(0)) == 9.0


def test_delay_without_retry_after_is_the_backoff() -> None:
    policy = RetryPolicy(backoff=Backoff(initial=2.0, jitter=0.0))
    assert policy.delay_for(transport_error(ConnectionResetError()), 3, random.Random(0)) == 8.0


def test_retry_after_of_a_group_is_the_longest() -> None:
    group = ExceptionGroup("layers", [answer(429, retry_after=3), answer(429, retry_after=11)])
    assert retry_after_of(group) == 11
    assert retry_after_of(answer(503)) is None


class FakeTime:
    """A clock that only moves when someone sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_host_gate_holds_every_waiter_of_that_host() -> None:
    time = FakeTime()
    gate = HostGate(clock=time.clock, sleep=time.sleep)
    gate.hold_for("Registry.test:5000", 7)
    opened: list[float] = []

    async def request() -> None:
        await gate.wait("registry.test:5000")
        opened.append(time.now)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(request)
            group.start_soon(request)
    assert len(opened) == 2
    assert all(moment >= 1007.0 for moment in opened)


@pytest.mark.anyio
async def test_host_gate_leaves_other_hosts_open() -> None:
    time = FakeTime()
    gate = HostGate(clock=time.clock, sleep=time.sleep)
    gate.hold_until("busy.test", 2000.0)
    with anyio.fail_after(TIMEOUT):
        await gate.wait("quiet.test")
    assert time.sleeps == []
    assert gate.remaining("busy.test") == 1000.0


def test_host_gate_keeps_the_longer_hold() -> None:
    time = FakeTime()
    gate = HostGate(clock=time.clock, sleep=time.sleep)
    gate.hold_until("registry.test", 1010.0)
    gate.hold_until("registry.test", 1005.0)
    assert gate.remaining("registry.test") == 10.0


@pytest.mark.anyio
async def test_host_gate_follows_a_hold_extended_while_waiting() -> None:
    time = FakeTime()
    extended = False

    async def sleep(seconds: float) -> None:
        nonlocal extended
        if not extended:  # another request draws a 429 while this one waits
            extended = True
            gate.hold_until("registry.test", time.now + 14)
        await time.sleep(seconds)

    gate = HostGate(clock=time.clock, sleep=sleep)
    gate.hold_until("registry.test", 1010.0)
    with anyio.fail_after(TIMEOUT):
        await gate.wait("registry.test")
    assert time.sleeps == [10.0, 4.0]
    assert gate.remaining("registry.test") == 0.0


class Flaky:
    """An operation that fails with the given errors in turn, then returns its attempt number."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.attempts: list[int] = []

    async def __call__(self, attempt: int) -> int:
        self.attempts.append(attempt)
        if self.errors:
            raise self.errors.pop(0)
        return attempt


@pytest.mark.anyio
async def test_retrying_returns_once_the_operation_succeeds() -> None:
    time = FakeTime()
    operation = Flaky(answer(503), transport_error(ConnectionResetError()))
    result = await retrying(operation, Attempts(FAST, random.Random(0)), sleep=time.sleep)
    assert result == 3
    assert operation.attempts == [1, 2, 3]
    assert len(time.sleeps) == 2


@pytest.mark.anyio
async def test_retrying_raises_the_last_error_when_attempts_run_out() -> None:
    time = FakeTime()
    errors = [answer(500 + n) for n in (0, 2, 3, 4, 0)]
    operation = Flaky(*errors)
    with pytest.raises(RegistryResponseError) as raised:
        await retrying(operation, Attempts(FAST, random.Random(0)), sleep=time.sleep)
    assert raised.value is errors[-1]
    assert operation.attempts == [1, 2, 3, 4, 5]
    assert len(time.sleeps) == 4


@pytest.mark.anyio
async def test_retrying_gives_up_at_once_on_a_permanent_error() -> None:
    time = FakeTime()
    denied = answer(403, "DENIED")
    operation = Flaky(answer(503), denied, answer(503))
    with pytest.raises(DeniedError) as raised:
        await retrying(operation, Attempts(FAST, random.Random(0)), sleep=time.sleep)
    assert raised.value is denied
    assert operation.attempts == [1, 2]


@pytest.mark.anyio
async def test_on_retry_hears_each_failure_with_the_delay_that_is_slept() -> None:
    time = FakeTime()
    policy = RetryPolicy(attempts=4, backoff=Backoff(initial=1.0, factor=2.0, jitter=0.0))
    errors = [answer(503), answer(429, retry_after=9), transport_error(TimeoutError())]
    heard: list[tuple[BaseException, float, int]] = []

    async def on_retry(error: BaseException, delay: float, attempt: int) -> None:
        heard.append((error, delay, attempt))

    result = await retrying(Flaky(*errors), Attempts(policy), on_retry=on_retry, sleep=time.sleep)
    assert result == 4
    assert heard == [(errors[0], 1.0, 1), (errors[1], 9.0, 2), (errors[2], 4.0, 3)]
    assert time.sleeps == [1.0, 9.0, 4.0]


@pytest.mark.anyio
async def test_retry_delays_follow_the_seeded_backoff() -> None:
    time = FakeTime()
    policy = RetryPolicy(attempts=3)
    await retrying(
        Flaky(answer(503), answer(503)), Attempts(policy, random.Random(5)), sleep=time.sleep
    )
    rng = random.Random(5)
    assert time.sleeps == [policy.backoff.delay(1, rng), policy.backoff.delay(2, rng)]


@pytest.mark.anyio
async def test_cancellation_is_neither_retried_nor_swallowed() -> None:
    time = FakeTime()
    operation = Flaky(asyncio.CancelledError(), answer(503))
    with pytest.raises(asyncio.CancelledError):
        await retrying(operation, Attempts(FAST), sleep=time.sleep)
    assert operation.attempts == [1]
    assert time.sleeps == []


@pytest.mark.anyio
async def test_cancelling_the_task_during_the_wait_stops_at_once() -> None:
    attempts: list[int] = []
    sleeping = anyio.Event()

    async def always_busy(attempt: int) -> None:
        attempts.append(attempt)
        raise answer(503)

    async def long_sleep(seconds: float) -> None:
        sleeping.set()
        await anyio.sleep_forever()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(partial(retrying, always_busy, Attempts(DEFAULT), sleep=long_sleep))
            await sleeping.wait()
            group.cancel_scope.cancel()
    assert attempts == [1]


@pytest.mark.anyio
async def test_count_down_ticks_each_whole_second_and_sleeps_the_whole_delay() -> None:
    time = FakeTime()
    ticks: list[int] = []
    await count_down(2.5, ticks.append, sleep=time.sleep)
    assert ticks == [3, 2, 1]
    assert sum(time.sleeps) == 2.5


@pytest.mark.anyio
async def test_count_down_of_nothing_says_nothing() -> None:
    time = FakeTime()
    ticks: list[int] = []
    await count_down(0.0, ticks.append, sleep=time.sleep)
    assert ticks == []
    assert time.sleeps == []
