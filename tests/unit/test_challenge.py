"""WWW-Authenticate parsing and the scope grammar: the edge cases real registries send."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from engine.registry.auth.challenge import (
    Challenge,
    parse_challenges,
    preferred_challenge,
    registry_wide,
    response_challenges,
)
from engine.registry.auth.messages import HttpResponse
from engine.registry.auth.scope import (
    merge_scopes,
    mount_source_scopes,
    repository_scope,
    scope_key,
)

PARSE_CASES = [
    pytest.param(
        ['Bearer realm="https://auth.example.com/token",service="registry.example.com"'],
        [
            (
                "bearer",
                {"realm": "https://auth.example.com/token", "service": "registry.example.com"},
            )
        ],
        id="docker-hub-shape",
    ),
    pytest.param(
        ['Bearer realm="r",scope="repository:a/b:pull,push"'],
        [("bearer", {"realm": "r", "scope": "repository:a/b:pull,push"})],
        id="comma-inside-quotes",
    ),
    pytest.param(
        [r'Bearer realm="r", slashed="he\"l\lo", other=fun'],
        [("bearer", {"realm": "r", "slashed": 'he"llo', "other": "fun"})],
        id="escaped-quote-and-token-value",
    ),
    pytest.param(
        ['Basic realm="Registry Realm", Bearer realm="https://t/token",service="s"'],
        [
            ("basic", {"realm": "Registry Realm"}),
            ("bearer", {"realm": "https://t/token", "service": "s"}),
        ],
        id="two-challenges-one-header",
    ),
    pytest.param(
        ['Basic realm="a"', 'Bearer realm="b"'],
        [("basic", {"realm": "a"}), ("bearer", {"realm": "b"})],
        id="two-headers",
    ),
    pytest.param(
        ['BEARER REALM="x" , Service = "y"'],
        [("bearer", {"realm": "x", "service": "y"})],
        id="case-and-spaces",
    ),
    pytest.param(
        ["Negotiate YIIBzgYGKwYBBQUCoIIBwjCCAb4=, Basic realm=r"],
        [("negotiate", {}), ("basic", {"realm": "r"})],
        id="token68-then-known-scheme",
    ),
    pytest.param(
        ['Digest realm="d", qop="auth,auth-int", nonce="n"', "Basic"],
        [("digest", {"realm": "d", "qop": "auth,auth-int", "nonce": "n"}), ("basic", {})],
        id="unknown-scheme-and-bare-scheme",
    ),
    pytest.param(
        ['Bearer realm="a", realm="b"'],
        [("bearer", {"realm": "a"})],
        id="first-duplicate-wins",
    ),
    pytest.param(
        ['Bearer service="s", realm="open, scope=x'],
        [("bearer", {"service": "s"})],
        id="unterminated-quote-stops",
    ),
    pytest.param(['realm="orphan"', "", "  ,  "], [], id="no-scheme"),
    pytest.param(['Bearer realm=""'], [("bearer", {"realm": ""})], id="empty-quoted"),
]


@pytest.mark.parametrize(("headers", "expected"), PARSE_CASES)
def test_parse_challenges(headers: list[str], expected: list[tuple[str, dict[str, str]]]) -> None:
    parsed = parse_challenges(headers)
    assert [(c.scheme, dict(c.parameters)) for c in parsed] == expected


def test_response_challenges_reads_every_header_of_a_401() -> None:
    headers = CIMultiDict([("www-authenticate", 'Basic realm="a"')])
    headers.add("WWW-Authenticate", 'Bearer realm="b"')
    found = response_challenges(HttpResponse(401, headers, b""))
    assert [c.scheme for c in found] == ["basic", "bearer"]


def test_a_challenge_on_a_non_401_is_ignored() -> None:
    headers = {"WWW-Authenticate": 'Bearer realm="b"'}
    assert response_challenges(HttpResponse(200, headers, b"")) == []


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (['Basic realm="a"', 'Bearer realm="b"'], "bearer"),
        (['Bearer service="no-realm"', 'Basic realm="a"'], "basic"),
        (['Digest realm="d"', "Negotiate"], None),
        (['Bearer realm="b"'], "bearer"),
    ],
)
def test_preferred_challenge(offered: list[str], chosen: str | None) -> None:
    picked = preferred_challenge(parse_challenges(offered))
    assert (picked.scheme if picked else None) == chosen


def test_registry_wide_forgets_the_refused_requests_scope() -> None:
    challenge = Challenge(
        "bearer", {"realm": "r", "service": "s", "scope": "repository:a:pull", "error": "x"}
    )
    assert dict(registry_wide(challenge).parameters) == {"realm": "r", "service": "s"}


def test_repository_scope() -> None:
    assert repository_scope("a/b") == "repository:a/b:push,pull"
    assert repository_scope("a/b", ("pull",)) == "repository:a/b:pull"


@pytest.mark.parametrize(
    ("groups", "merged"),
    [
        ((["repository:a:push,pull"], ["repository:a:pull"]), ("repository:a:push,pull",)),
        ((["repository:a:pull"], ["repository:a:push"]), ("repository:a:pull,push",)),
        (
            (["repository:a:push,pull", "repository:src:pull"], ["repository:a:pull"]),
            ("repository:a:push,pull", "repository:src:pull"),
        ),
        ((["repository:a:pull repository:b:pull"],), ("repository:a:pull", "repository:b:pull")),
        ((["repository:localhost:5000/a:pull"],), ("repository:localhost:5000/a:pull",)),
        ((["registry:catalog:*", "odd", "odd"],), ("registry:catalog:*", "odd")),
        ((["repository:a:"],), ("repository:a:",)),
        (([],), ()),
    ],
)
def test_merge_scopes(groups: tuple[list[str], ...], merged: tuple[str, ...]) -> None:
    assert merge_scopes(*groups) == merged


def test_scope_key_ignores_order() -> None:
    one = scope_key(["repository:a:push,pull", "repository:b:pull"])
    other = scope_key(["repository:b:pull", "repository:a:pull,push"])
    assert one == other
    assert one != scope_key(["repository:a:pull"])


@pytest.mark.parametrize(
    ("url", "scopes"),
    [
        ("https://r/v2/a/blobs/uploads/?mount=sha256:1&from=lib/src", ("repository:lib/src:pull",)),
        ("https://r/v2/a/blobs/uploads/", ()),
        ("https://r/v2/a/blobs/uploads/?from=", ()),
    ],
)
def test_mount_source_scopes(url: str, scopes: tuple[str, ...]) -> None:
    assert mount_source_scopes(url) == scopes
