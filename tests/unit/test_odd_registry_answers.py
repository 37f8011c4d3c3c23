"""Whatever a registry or its token server answers, the protocol core reads it or refuses it
with a HoistError (the command's one error line), never another exception.

Hypothesis sends the pure parsers every header and body a misbehaving server could: challenges,
token documents, error bodies, ``Range``, ``Content-Length``, ``Location``. Pure logic: the real
registry's answers are in ``tests/integration``. ``HOIST_FUZZ_EXAMPLES=N`` runs N random
examples of each (``tests/support/fuzzing.py``).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.digest import Digest
from engine.errors import HoistError
from engine.registry import protocol
from engine.registry.auth.challenge import parse_challenges, preferred_challenge, registry_wide
from engine.registry.auth.messages import HttpResponse
from engine.registry.auth.token import MINIMUM_LIFETIME, parse_token_response
from tests.support.fuzzing import VALUES, fuzz_settings

DIGEST = Digest.of(b"blob")
URL = "http://127.0.0.1:5000/v2/app/blobs/uploads/"

#: Header text as aiohttp hands it over: latin-1, so any character below 256.
HEADER = st.one_of(
    st.text(st.characters(max_codepoint=255), max_size=40),
    st.sampled_from(["bytes=0-", "0-0", "0--1", "0-²", " 12 ", "-5", "²", "1e3", "0x10"]),
)
JSON_BODIES = VALUES.map(lambda value: json.dumps(value).encode())
#: A token server's document with a token, so that the fields beside it are read (one without
#: is refused before them: ``test_any_token_refusal_is_an_error_without_the_secret``).
TOKEN_FIELDS = st.fixed_dictionaries(
    {"token": st.text(min_size=1, max_size=8)},
    optional={
        "access_token": VALUES,
        "refresh_token": VALUES,
        "expires_in": VALUES,
        "issued_at": st.one_of(
            VALUES,
            st.datetimes().map(lambda at: at.isoformat()),
            st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]),
        ),
    },
)


@fuzz_settings(200)
@given(st.lists(HEADER, max_size=3))
def test_any_challenge_header(values: list[str]) -> None:
    for challenge in parse_challenges(values):
        registry_wide(challenge)
    preferred_challenge(parse_challenges(values))


@fuzz_settings(500)
@given(TOKEN_FIELDS)
def test_any_token_document(document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    now = time.time()
    try:
        token = parse_token_response(
            HttpResponse(200, {}, body), now, url="http://t/token", secrets=["secret"]
        )
    except HoistError:
        return
    # A token has a time to expire at, however odd the server's numbers: never NaN, which
    # would keep it from ever being reused.
    assert not math.isnan(token.expires_at)
    token.usable(now)


SECRET = "hunter2-secret"
#: Bodies a token server refuses with, some repeating the password it was sent.
REFUSALS = st.one_of(
    st.binary(max_size=200),
    JSON_BODIES,
    st.sampled_from(["details", "error", "message", "error_description"]).map(
        lambda key: json.dumps({key: f"bad password {SECRET}"}).encode()
    ),
)


@fuzz_settings(200)
@given(st.sampled_from([400, 401, 403, 500]), REFUSALS)
def test_any_token_refusal_is_an_error_without_the_secret(status: int, body: bytes) -> None:
    try:
        parse_token_response(HttpResponse(status, {}, body), 0.0, url="http://t", secrets=[SECRET])
    except HoistError as refusal:
        assert SECRET not in str(refusal)
    else:
        raise AssertionError(f"a {status} answer gave a token")


@fuzz_settings(200)
@given(st.binary(max_size=200) | JSON_BODIES)
def test_any_error_body(body: bytes) -> None:
    protocol.parse_errors(body)


@fuzz_settings(200)
@given(HEADER | st.none())
def test_any_range_header(value: str | None) -> None:
    offset = protocol.committed_offset(value)
    assert offset is None or offset >= 0


@fuzz_settings(200)
@given(st.dictionaries(st.sampled_from(["Content-Length", "Docker-Content-Digest"]), HEADER))
def test_any_head_answer(headers: dict[str, str]) -> None:
    size = protocol.present_size(headers, DIGEST)
    assert size is None or size >= 0


@fuzz_settings(200)
@given(HEADER | st.none())
def test_any_location(location: str | None) -> None:
    try:
        resolved = protocol.resolve_location(URL, location)
    except HoistError:
        return
    protocol.same_origin(URL, resolved)
    protocol.commit_url(resolved, DIGEST)


@fuzz_settings(200)
@given(st.dictionaries(st.just("OCI-Chunk-Min-Length"), HEADER))
def test_any_chunk_minimum(headers: dict[str, str]) -> None:
    assert protocol.chunk_min_length(headers) >= 0


def test_a_token_lifetime_beyond_any_float_is_kept_as_long_as_possible() -> None:
    body = json.dumps({"token": "t", "expires_in": 10**400}).encode()
    token = parse_token_response(HttpResponse(200, {}, body), 0.0, url="http://t", secrets=[])
    assert token.expires_at > 10**9


def test_a_token_lifetime_that_is_no_number_gets_the_minimum() -> None:
    body = json.dumps({"token": "t", "expires_in": float("nan")}).encode()
    token = parse_token_response(HttpResponse(200, {}, body), 0.0, url="http://t", secrets=[])
    assert token.expires_at == MINIMUM_LIFETIME
