"""Retry policy as data: which failures are temporary, how long to wait, and the retry loop.

The tables below decide; nothing else in Hoist guesses whether an error is worth another try.
Temporary: the connection failed or timed out, the registry was busy or broken for a moment (5xx
but 501/505, 408, 429), or it lost the upload session (start a new one). Never retried: what the
registry will answer again (unauthorized after re-authentication, ``DENIED``, ``NAME_UNKNOWN``,
``UNSUPPORTED``, ...), our own source's bad content, a full disk, a certificate that does not
verify, and cancellation. Waits grow exponentially with jitter and are never shorter than the
registry's ``Retry-After``.

One operation (a layer's whole upload, a manifest ``PUT``) spends one ``Attempts`` budget, however
many requests it makes: retries happen at that one level, so they cannot multiply. How a failed
upload request goes on (resume, a new session, chunks, or not at all) is decided here too
(``Attempts.upload_failed``); the upload flow only carries the decision out.
"""

from __future__ import annotations

import email.utils
import enum
import errno
import math
import random
import re
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import TypeVar
from urllib.parse import urlsplit

import anyio

from engine import logs
from engine.errors import (
    ImageSourceError,
    RegistryResponseError,
    StoreError,
    TransportError,
)

__all__ = [
    "DEFAULT",
    "PERMANENT_CODES",
    "SESSION_GONE_CODES",
    "TEMPORARY_CODES",
    "TEMPORARY_STATUSES",
    "Attempts",
    "Backoff",
    "Decision",
    "Remedy",
    "RetryPolicy",
    "count_down",
    "parse_retry_after",
    "retrying",
]

T = TypeVar("T")

log = logs.get_logger(__name__)

#: Statuses that say "not now" rather than "no": every 5xx but the two that mean "never here".
TEMPORARY_STATUSES: frozenset[int] = frozenset({408, 429} | (set(range(500, 600)) - {501, 505}))

#: Codes the registry will answer again whatever we wait: retrying only delays the failure.
#: ``UNAUTHORIZED`` reaches us only after the auth flow has already re-authenticated once.
PERMANENT_CODES: frozenset[str] = frozenset(
    {
        "UNAUTHORIZED",
        "DENIED",
        "NAME_UNKNOWN",
        "NAME_INVALID",
        "UNSUPPORTED",
        "DIGEST_INVALID",
        "SIZE_INVALID",
        "MANIFEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "TAG_INVALID",
    }
)

#: Codes saying the upload session is gone: Distribution cancels a session whose stored size no
#: longer matches its signed state (``BLOB_UPLOAD_INVALID``) and forgets expired ones.
SESSION_GONE_CODES: frozenset[str] = frozenset({"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"})

#: Codes that are temporary whatever the status; ``RANGE_INVALID`` (Distribution 3) is cured by
#: asking the session's offset again and resuming from there.
TEMPORARY_CODES: frozenset[str] = SESSION_GONE_CODES | {"TOOMANYREQUESTS", "RANGE_INVALID"}

#: A full disk does not empty itself between two attempts.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

_DELAY_SECONDS = re.compile(r"[0-9]+", re.ASCII)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial × factor^(attempt-1)``, ± ``jitter``, at most ``maximum``."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1  # a fraction: 0.1 spreads each delay over ±10 %

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial:
            raise ValueError(f"backoff needs 0 <= initial <= maximum, got {self}")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"backoff needs factor >= 1 and 0 <= jitter < 1, got {self}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...)."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, got {attempt}")
        # Jitter keeps many layers that failed together from retrying in lockstep.
        spread = 1 + rng.uniform(-self.jitter, self.jitter)
        return min(self.maximum, self._grown(attempt) * spread)

    def _grown(self, attempt: int) -> float:
        try:
            return min(self.maximum, self.initial * self.factor ** (attempt - 1))
        except OverflowError:
            return self.maximum


@dataclass(frozen=True)
class RetryPolicy:
    """How often one operation is tried and how long to wait in between."""

    attempts: int = 5  # total tries, the first one included
    backoff: Backoff = field(default_factory=Backoff)
    #: A longer ``Retry-After`` is a refusal for this run (a rate limit reset hours away): fail
    #: with the registry's own message instead of hanging silently.
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy needs at least one attempt, got {self.attempts}")

    def is_temporary(self, error: BaseException) -> bool:
        """Whether another attempt may succeed; a group is temporary when every member is."""
        leaves = list(_leaves(error))
        return bool(leaves) and all(self._leaf_is_temporary(leaf) for leaf in leaves)

    def delay_for(self, error: BaseException, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before the attempt after ``attempt``: backoff, or more if asked (an
        error's ``retry_after`` is seconds, counted when its answer arrived)."""
        return max(self.backoff.delay(attempt, rng), retry_after_of(error) or 0.0)

    def _leaf_is_temporary(self, error: BaseException) -> bool:
        if _has_permanent_cause(error):
            return False
        if isinstance(error, RegistryResponseError):
            return self._answer_is_temporary(error)
        return isinstance(error, TransportError | TimeoutError | ConnectionError)

    def _answer_is_temporary(self, error: RegistryResponseError) -> bool:
        if error.code in PERMANENT_CODES:
            return False
        if error.retry_after is not None and error.retry_after > self.max_retry_after:
            return False
        return (
            error.code in TEMPORARY_CODES
            or error.status in TEMPORARY_STATUSES
            or _session_is_gone(error)
        )


#: Docker's five attempts, with waits of about 1, 2, 4 and 8 seconds.
DEFAULT = RetryPolicy()


#: Backoff jitter for callers that bring none (seeding a generator per call costs more).
_JITTER = random.Random()


class Remedy(enum.Enum):
    """How an upload goes on after one of its requests failed."""

    #: Wait, ask the session how much the registry kept, and go on from there.
    RESUME = "resume"
    #: Wait, then start a new session from byte 0: the registry lost (or spoiled) this one.
    NEW_SESSION = "new session"
    #: The registry refused a body as too large (413): send it again in chunks, at once.
    CHUNKS = "chunks"
    #: Raise the error: it is permanent, or the operation's attempts are spent.
    GIVE_UP = "give up"


@dataclass(frozen=True)
class Decision:
    remedy: Remedy
    delay: float = 0.0  # seconds to wait first


@dataclass
class Attempts:
    """One operation's budget of tries under ``policy``, spent by every request it makes."""

    policy: RetryPolicy
    rng: random.Random = field(default_factory=lambda: _JITTER)
    failed: int = 0

    def wait_after(self, error: BaseException) -> float | None:
        """Count a failed try: seconds to wait before the next one, or None to give up."""
        self.failed += 1
        if self.failed >= self.policy.attempts or not self.policy.is_temporary(error):
            return None
        return self.policy.delay_for(error, self.failed, self.rng)

    def upload_failed(self, error: BaseException, *, chunked: bool) -> Decision:
        """A request that sends or commits a blob failed: how the upload goes on."""
        if _too_large(error) and not chunked:
            self.failed += 1
            spent = self.failed >= self.policy.attempts
            return Decision(Remedy.GIVE_UP if spent else Remedy.CHUNKS)
        delay = self.wait_after(error)
        if delay is None:
            return Decision(Remedy.GIVE_UP)
        gone = any(_session_is_gone(leaf) for leaf in _leaves(error))
        return Decision(Remedy.NEW_SESSION if gone else Remedy.RESUME, delay)

    def status_failed(self, error: BaseException) -> Decision:
        """Asking a session's status failed. A registry's answer other than "not now" (a 404, a
        400, any error code) says the session is no good: a new one, no try spent; a failure
        of the request itself is a try, and the status is asked again after the wait."""
        if isinstance(error, RegistryResponseError) and not _answer_says_later(error):
            return Decision(Remedy.NEW_SESSION)
        delay = self.wait_after(error)
        return Decision(Remedy.GIVE_UP) if delay is None else Decision(Remedy.RESUME, delay)


def retry_after_of(error: BaseException) -> float | None:
    """The longest ``Retry-After`` any registry answer in ``error`` asked for, in seconds."""
    asked = [
        leaf.retry_after
        for leaf in _leaves(error)
        if isinstance(leaf, RegistryResponseError) and leaf.retry_after is not None
    ]
    return max(asked, default=None)


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date.

    ``now`` is the wall-clock time (``time.time()``) the answer arrived; a date in the past means
    0. Anything else (garbage, a negative number) is None: the header is then ignored.
    """
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    moment = _http_date(value)
    return None if moment is None else max(0.0, moment - now)


def _http_date(value: str) -> float | None:
    """An IMF-fixdate, RFC 850 or asctime date as a POSIX timestamp; None when it is none."""
    try:
        # Lenient as RFC 9110 asks of recipients; it also rejects impossible days (31 Feb).
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": HTTP dates are GMT whatever they say
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


async def retry_call(
    policy: RetryPolicy,
    call: Callable[..., Awaitable[T]],
    *args: object,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> T:
    """``call(*args)`` as an operation of its own under ``policy``."""
    return await retrying(lambda _attempt: call(*args), Attempts(policy), sleep=sleep)


async def retrying(
    operation: Callable[[int], Awaitable[T]],
    attempts: Attempts,
    *,
    on_retry: Callable[[BaseException, float, int], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> T:
    """Call ``operation(attempt)`` for attempt 1, 2, ... until it returns, fails for good, or
    ``attempts`` are spent (by this call or by others of the same operation); then the last
    error is raised as it was.

    Before each wait ``on_retry(error, delay, attempt)`` runs, ``attempt`` being the one that
    failed: the place to give an upload slot back and to say "Retrying in N seconds". Only
    ``Exception`` is caught, so cancellation (and KeyboardInterrupt) passes through at once.
    """
    while True:
        try:
            return await operation(attempts.failed + 1)
        except Exception as error:
            delay = attempts.wait_after(error)
            if delay is None:
                raise
            failed = error
        # Outside the except block so that on_retry's own errors do not chain onto this one.
        log.info("retry", attempt=attempts.failed, delay=round(delay, 3), error=str(failed))
        if on_retry is not None:
            await on_retry(failed, delay, attempts.failed)
        await sleep(delay)


async def count_down(
    delay: float,
    tick: Callable[[int], None],
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> None:
    """Sleep ``delay`` seconds, calling ``tick(n)`` with the whole seconds left (rounded up) at
    the start and at each whole second, as Docker's "Retrying in N seconds" line counts down."""
    remaining = delay
    while remaining > 0:
        left = math.ceil(remaining)
        tick(left)
        step = remaining - (left - 1)
        await sleep(step)
        remaining -= step


def _leaves(error: BaseException) -> Iterator[BaseException]:
    """The errors inside task-group exception groups, or the error itself."""
    if isinstance(error, BaseExceptionGroup):
        for member in error.exceptions:
            yield from _leaves(member)
    else:
        yield error


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it was raised from, as a traceback would print them."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )


def _has_permanent_cause(error: BaseException) -> bool:
    # A TransportError wraps whatever broke the request, which may be our own side's fault.
    return any(_is_permanent_cause(cause) for cause in _causes(error))


def _is_permanent_cause(error: BaseException) -> bool:
    if isinstance(error, ImageSourceError | StoreError | ssl.SSLCertVerificationError):
        return True
    return isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS


def _session_is_gone(error: BaseException) -> bool:
    if not isinstance(error, RegistryResponseError) or error.code in PERMANENT_CODES:
        return False
    if error.code in SESSION_GONE_CODES:
        return True
    # Some registries forget an expired session with a bare 404 on its URL.
    return error.status == 404 and _is_session_url(error.url)


def _is_session_url(url: str) -> bool:
    """``.../blobs/uploads/<id>``: an upload session, not the POST that opens one."""
    _, _, session = urlsplit(url).path.partition("/blobs/uploads/")
    return bool(session.strip("/"))


def _too_large(error: BaseException) -> bool:
    return isinstance(error, RegistryResponseError) and error.status == 413


def _answer_says_later(error: RegistryResponseError) -> bool:
    """A busy or briefly broken registry: the same question may get an answer later."""
    return error.status in TEMPORARY_STATUSES or error.code in {"TOOMANYREQUESTS"}
