"""The upload's decisions with plain values: steps out, answers (or errors) in, no I/O at all."""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import BlobUploadUnknownError, DeniedError, RegistryResponseError, TransportError
from engine.push.upload_flow import (
    AUTO_CHUNK_SIZE,
    Abandon,
    Commit,
    Committed,
    Open,
    Patch,
    PatchChunk,
    Sent,
    Status,
    Step,
    UploadFlow,
    Wait,
)
from engine.registry.protocol import UploadSession, UploadStatus
from engine.retry import Attempts, Backoff, RetryPolicy

SIZE = 5000
POLICY = RetryPolicy(attempts=4, backoff=Backoff(initial=1.0, jitter=0.0))

Respond = Callable[[Step[Any]], object]


def play(flow: UploadFlow, respond: Respond) -> tuple[list[Step[Any]], BaseException | None]:
    """Run the flow as the driver does; every step it asked for, and the error it ended with."""
    steps: list[Step[Any]] = []
    run = flow.run()
    try:
        step = next(run)
        while True:
            steps.append(step)
            try:
                answer = respond(step)
            except Exception as error:
                step = run.throw(error)
            else:
                step = run.send(answer)
    except StopIteration:
        return steps, None
    except Exception as error:
        return steps, error


def registry(*failures: tuple[type[Step[Any]], Exception], kept: int = 0) -> Respond:
    """A registry that answers every step well, but for ``failures``, each once in order."""
    pending = list(failures)
    opened = 0

    def respond(step: Step[Any]) -> object:
        nonlocal opened
        if pending and isinstance(step, pending[0][0]):
            raise pending.pop(0)[1]
        match step:
            case Open():
                opened += 1
                return UploadSession(f"s{opened}")
            case Patch(location, _):
                return Sent(location, SIZE)
            case PatchChunk(location, start, size):
                end = min(SIZE, start + size)
                return Sent(location, end, end == SIZE)
            case Status(location):
                return UploadStatus(location, kept)
            case Committed():
                return False
        return None

    return respond


def flow(**options: Any) -> UploadFlow:
    return UploadFlow(Attempts(POLICY, random.Random(0)), **options)


def answer(status: int, code: str | None = None) -> RegistryResponseError:
    return RegistryResponseError(
        f"{status}", status=status, code=code, url="https://r/v2/a/blobs/uploads/x"
    )


def test_a_small_blob_is_one_session_and_one_commit_with_its_body() -> None:
    steps, error = play(flow(whole_in_commit=True), registry())
    assert error is None
    assert steps == [Open(), Commit("s1", whole=True)]


def test_a_stream_is_one_patch_and_an_empty_commit_in_the_session_given() -> None:
    steps, error = play(flow(session=UploadSession("mounted")), registry())
    assert error is None
    assert steps == [Patch("mounted", 0), Commit("mounted")]


def test_a_broken_patch_resumes_where_the_registry_says_it_kept() -> None:
    steps, error = play(flow(), registry((Patch, TransportError("reset")), kept=1200))
    assert error is None
    assert steps == [
        Open(),
        Patch("s1", 0),
        Wait(1.0),
        Status("s1"),
        Patch("s1", 1200),
        Commit("s1"),
    ]


def test_a_session_the_registry_lost_starts_again_from_byte_zero() -> None:
    gone = BlobUploadUnknownError("gone", status=404, url="https://r/v2/a/blobs/uploads/x")
    steps, error = play(flow(), registry((Patch, gone)))
    assert error is None
    assert steps == [
        Open(),
        Patch("s1", 0),
        Wait(1.0),
        Abandon("s1"),
        Open(),
        Patch("s2", 0),
        Commit("s2"),
    ]


def test_a_status_answered_with_an_error_means_a_new_session_without_a_try_spent() -> None:
    attempts = Attempts(POLICY, random.Random(0))
    steps, error = play(
        UploadFlow(attempts),
        registry((Patch, TransportError("reset")), (Status, answer(400))),
    )
    assert error is None
    assert steps[3:] == [Status("s1"), Abandon("s1"), Open(), Patch("s2", 0), Commit("s2")]
    assert attempts.failed == 1


def test_a_413_sends_the_blob_again_in_chunks_at_once() -> None:
    steps, error = play(flow(), registry((Patch, answer(413))))
    assert error is None
    assert Wait not in {type(step) for step in steps}
    assert steps[2:4] == [Status("s1"), PatchChunk("s1", 0, AUTO_CHUNK_SIZE)]


def test_a_small_blob_refused_as_too_large_goes_in_chunks_in_the_same_session() -> None:
    steps, error = play(flow(whole_in_commit=True), registry((Commit, answer(413))))
    assert error is None
    assert steps == [
        Open(),
        Commit("s1", whole=True),
        Committed(),
        PatchChunk("s1", 0, AUTO_CHUNK_SIZE),
        Commit("s1"),
    ]


def test_a_lost_commit_answer_is_recognised_by_the_blob_being_there() -> None:
    def respond(step: Step[Any]) -> object:
        if isinstance(step, Commit):
            raise TransportError("the answer never came")
        return True if isinstance(step, Committed) else inner(step)

    inner = registry()
    steps, error = play(flow(), respond)
    assert error is None
    assert steps == [Open(), Patch("s1", 0), Commit("s1"), Committed()]


def test_a_permanent_error_is_raised_without_a_wait_and_the_session_is_left_to_the_driver() -> None:
    denied = DeniedError("denied", status=403)
    machine = flow()
    steps, error = play(machine, registry((Patch, denied)))
    assert error is denied
    assert steps == [Open(), Patch("s1", 0)]
    assert machine.location == "s1" and not machine.committed


@pytest.mark.parametrize("failing", [Open, Patch, Commit])
def test_a_registry_that_is_down_is_tried_exactly_as_often_as_the_policy_says(
    failing: type[Step[Any]],
) -> None:
    def respond(step: Step[Any]) -> object:
        if isinstance(step, failing):
            raise answer(503)
        return inner(step)

    inner = registry()
    steps, error = play(flow(), respond)
    assert isinstance(error, RegistryResponseError) and error.status == 503
    assert sum(isinstance(step, failing) for step in steps) == POLICY.attempts
    assert sum(isinstance(step, Wait) for step in steps) == POLICY.attempts - 1


def test_tries_spent_before_the_upload_count_against_it() -> None:
    attempts = Attempts(POLICY, random.Random(0))
    attempts.failed = 2  # the layer's HEAD and mount already failed twice

    def respond(step: Step[Any]) -> object:
        if isinstance(step, Patch):
            raise TransportError("reset")
        return inner(step)

    inner = registry()
    steps, error = play(UploadFlow(attempts), respond)
    assert isinstance(error, TransportError)
    assert sum(isinstance(step, Patch) for step in steps) == POLICY.attempts - 2


def test_a_status_that_fails_for_a_moment_is_asked_again_after_a_wait() -> None:
    steps, error = play(
        flow(), registry((Patch, TransportError("reset")), (Status, answer(503)), kept=700)
    )
    assert error is None
    assert steps == [
        Open(),
        Patch("s1", 0),
        Wait(1.0),
        Status("s1"),
        Wait(2.0),
        Status("s1"),
        Patch("s1", 700),
        Commit("s1"),
    ]


def test_a_status_that_cannot_be_asked_at_all_ends_the_upload() -> None:
    untrusted = TransportError("certificate verify failed")
    untrusted.__cause__ = ssl.SSLCertVerificationError("self-signed")
    steps, error = play(flow(), registry((Patch, TransportError("reset")), (Status, untrusted)))
    assert error is untrusted
    assert steps[-1] == Status("s1")
