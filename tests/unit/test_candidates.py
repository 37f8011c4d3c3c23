"""Mount and existence-check candidates: Docker's own cases (push_v2_test.go), in its words.

Docker's tests name digests with words ("apple", "1"); here each word stands for the sha256 of
itself, and results are read back as words. ``tagged(key, word, repository)`` is an entry recorded
with credentials whose HMAC key is ``key`` (no HMAC when ``key`` is empty), as in Docker's tests.
"""

from __future__ import annotations

import hashlib

import pytest

from engine.digest import Digest
from engine.push.candidates import (
    Effort,
    effort_for,
    existence_candidates,
    hmac_key,
    mount_candidates,
)
from engine.registry.auth_config import AuthConfig
from engine.store.metadata import V2Metadata, check_hmac, compute_hmac

KiB = 1024
MiB = 1024 * KiB


def digest(word: str) -> Digest:
    return Digest.of(word.encode())


def word(d: Digest) -> str:
    words = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "dgst"]
    words += ["apple", "banana", "orange", "pear", "plum"]
    return next(w for w in words if digest(w) == d)


def tagged(key: str, name: str, repository: str) -> V2Metadata:
    return signed(key.encode(), name, repository)


def signed(key: bytes, name: str, repository: str) -> V2Metadata:
    d = digest(name)
    return V2Metadata(d, repository, compute_hmac(key, d, repository))


def plain(name: str, repository: str = "", hmac: str = "") -> V2Metadata:
    return V2Metadata(digest(name), repository, hmac)


# -- how hard to look, by layer size -------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, Effort(1, 1, False)),
        (100 * KiB, Effort(1, 1, False)),
        (100 * KiB + 1, Effort(3, 1, False)),
        (10 * MiB, Effort(3, 1, False)),
        (10 * MiB + 1, Effort(4, 3, True)),
        (None, Effort(3, 1, False)),
    ],
)
def test_effort_for_size(size: int | None, expected: Effort) -> None:
    assert effort_for(size) == expected


# -- mount candidates (Docker's TestGetRepositoryMountCandidates) --------------------------------

MOUNT_CASES = [
    pytest.param("", "docker.io/library/busybox", -1, [], [], id="empty metadata"),
    pytest.param(
        "",
        "docker.io/library/busybox",
        -1,
        [tagged("key", "dgst", "127.0.0.1/repo")],
        [],
        id="one item not matching",
    ),
    pytest.param(
        "",
        "docker.io/library/busybox",
        -1,
        [tagged("hash", "1", "docker.io/library/hello-world")],
        [tagged("hash", "1", "docker.io/library/hello-world")],
        id="one item matching",
    ),
    pytest.param(
        "",
        "docker.io/library/busybox",
        -1,
        [plain("1"), plain("3"), plain("2")],
        [],
        id="allow missing SourceRepository",
    ),
    pytest.param(
        "",
        "docker.io/user/app",
        -1,
        [
            plain("1", "docker.io/user/foo"),
            plain("3", "docker.io/user/bar"),
            plain("2", "docker.io/library/app"),
        ],
        [
            plain("3", "docker.io/user/bar"),
            plain("1", "docker.io/user/foo"),
            plain("2", "docker.io/library/app"),
        ],
        id="handle docker.io",
    ),
    pytest.param(
        "abcd",
        "127.0.0.1/foo/bar",
        -1,
        [
            tagged("hash", "1", "docker.io/library/hello-world"),
            tagged("efgh", "2", "127.0.0.1/hello-world"),
            tagged("abcd", "3", "docker.io/library/busybox"),
            tagged("hash", "4", "docker.io/library/busybox"),
            tagged("hash", "5", "127.0.0.1/foo"),
            tagged("hash", "6", "127.0.0.1/bar"),
            tagged("efgh", "7", "127.0.0.1/foo/bar"),
            tagged("abcd", "8", "127.0.0.1/xyz"),
            tagged("hash", "9", "127.0.0.1/foo/app"),
        ],
        [
            tagged("abcd", "8", "127.0.0.1/xyz"),  # same credentials first
            tagged("hash", "9", "127.0.0.1/foo/app"),  # then the longest shared path
            tagged("hash", "5", "127.0.0.1/foo"),
            tagged("hash", "6", "127.0.0.1/bar"),  # then newest first
            tagged("efgh", "2", "127.0.0.1/hello-world"),
        ],
        id="sort more items",
    ),
    pytest.param(
        "abcd",
        "docker.io/user/app",
        3,
        [
            tagged("abcd", "1", "docker.io/user/app1"),
            tagged("abcd", "2", "docker.io/user/app/base"),
            tagged("hash", "3", "docker.io/user/app"),
            tagged("abcd", "4", "127.0.0.1/user/app"),
            tagged("hash", "5", "docker.io/user/foo"),
            tagged("hash", "6", "docker.io/app/bar"),
        ],
        [
            tagged("abcd", "2", "docker.io/user/app/base"),
            tagged("abcd", "1", "docker.io/user/app1"),
            tagged("hash", "5", "docker.io/user/foo"),  # the target itself is never a source
        ],
        id="limit max candidates",
    ),
]


@pytest.mark.parametrize(("key", "target", "limit", "metadata", "expected"), MOUNT_CASES)
def test_mount_candidates(
    key: str, target: str, limit: int, metadata: list[V2Metadata], expected: list[V2Metadata]
) -> None:
    assert mount_candidates(target, key.encode(), metadata, limit) == expected


def test_mount_candidates_skip_names_that_are_not_canonical() -> None:
    # Docker parses the recorded repository strictly: "busybox" is no repository of docker.io.
    metadata = [plain("1", "busybox"), plain("2", "docker.io/busybox"), plain("3", "Docker.io/x")]
    assert mount_candidates("docker.io/library/app", b"", metadata, -1) == []


# -- existence checks (the cases of Docker's TestLayerAlreadyExists) -----------------------------
# Docker's expected requests there are exactly the candidates, in order: a HEAD that finds the
# blob is always the last one a case makes.

EXISTENCE_CASES = [
    pytest.param("", "docker.io/library/busybox", 3, True, [], [], id="empty metadata"),
    pytest.param(
        "",
        "docker.io/library/busybox",
        3,
        False,
        [plain("pear", "docker.io/library/busybox")],
        ["pear"],
        id="single not existent metadata",
    ),
    pytest.param(
        "",
        "docker.io/library/busybox",
        1,
        False,
        [plain("apple", "docker.io/library/busybox")],
        ["apple"],
        id="access denied",
    ),
    pytest.param(
        "",
        "docker.io/library/busybox",
        3,
        False,
        [
            plain("apple", "docker.io/library/hello-world"),
            plain("orange", "docker.io/library/busybox/subapp"),
            plain("pear", "docker.io/busybox"),
            plain("plum", "busybox"),
            plain("banana", "127.0.0.1/busybox"),
        ],
        [],
        id="not matching repositories",
    ),
    pytest.param(
        "",
        "docker.io/library/busybox",
        10,
        True,
        [
            plain("apple", "docker.io/library/hello-world"),
            plain("orange", "docker.io/busybox/subapp"),
            plain("pear", "docker.io/busybox"),
            plain("plum", "docker.io/library/busybox"),
            plain("banana", "127.0.0.1/busybox"),
        ],
        ["plum", "apple", "pear", "orange", "banana"],
        id="check other repositories",
    ),
    pytest.param(
        "",
        "docker.io/library/busybox",
        3,
        False,
        [plain("apple", "docker.io/library/busybox", hmac="dummyhmac")],
        ["apple"],
        id="find existing blob with different hmac",
    ),
    pytest.param(
        "key",
        "docker.io/library/busybox",
        3,
        False,
        [plain("apple", "docker.io/library/busybox")],
        ["apple"],
        id="overwrite media types",
    ),
    pytest.param(
        "key",
        "127.0.0.1/myapp",
        3,
        False,
        [
            tagged("someotherkey", "pear", "127.0.0.1/myapp"),
            tagged("key", "apple", "127.0.0.1/myapp"),
            tagged("", "plum", "127.0.0.1/myapp"),
        ],
        ["apple", "plum", "pear"],
        id="find existing blob among many",
    ),
    pytest.param(
        "",
        "docker.io/user/app",
        3,
        False,
        [
            plain("pear", "docker.io/user/app"),
            plain("apple", "docker.io/user/app"),
            plain("plum", "docker.io/user/app"),
            plain("banana", "docker.io/user/app"),
        ],
        ["banana", "plum", "apple"],
        id="reach maximum existence checks",
    ),
    pytest.param(
        "",
        "docker.io/user/app",
        0,
        False,
        [plain("pear", "docker.io/user/app"), plain("apple", "docker.io/user/app")],
        [],
        id="zero allowed existence checks",
    ),
    pytest.param(
        "",
        "docker.io/library/busybox",
        3,
        False,
        [
            tagged("key1", "pear", "docker.io/library/busybox"),
            tagged("key2", "apple", "docker.io/library/busybox"),
            tagged("key3", "apple", "docker.io/library/busybox"),
        ],
        ["apple", "pear"],
        id="stat single digest just once",
    ),
    pytest.param(
        "key",
        "docker.io/user/app",
        3,
        False,
        [
            tagged("key", "banana", "docker.io/user/app"),
            tagged("key", "orange", "docker.io/user/app"),
            tagged("key", "plum", "docker.io/user/app"),
        ],
        ["plum", "orange", "banana"],
        id="don't stop on first error",
    ),
    pytest.param(
        "",
        "docker.io/user/app",
        3,
        False,
        [plain("plum", "docker.io/library/busybox"), plain("orange", "docker.io/user/app")],
        ["orange"],
        id="remove outdated metadata",
    ),
    pytest.param(
        "",
        "docker.io/library/busybox",
        3,
        False,
        [plain("1"), plain("3"), plain("2")],
        ["2", "3", "1"],
        id="missing SourceRepository",
    ),
    pytest.param(
        "",
        "docker.io/library/busybox",
        3,
        False,
        [plain("1"), plain("2", "docker.io/library/busybox"), plain("3")],
        ["2", "3", "1"],
        id="with and without SourceRepository",
    ),
]


@pytest.mark.parametrize(
    ("key", "target", "max_checks", "check_other", "metadata", "expected"), EXISTENCE_CASES
)
def test_existence_candidates(
    key: str,
    target: str,
    max_checks: int,
    check_other: bool,
    metadata: list[V2Metadata],
    expected: list[str],
) -> None:
    chosen = existence_candidates(target, metadata, max_checks, check_other, key=key.encode())
    assert [word(entry.digest) for entry in chosen] == expected


def test_existence_candidates_skip_digests_already_checked() -> None:
    # Docker's second round of checks (after the mounts) skips what its first round asked, and
    # its limit counts new digests only.
    target = "docker.io/user/app"
    metadata = [plain(w, target) for w in ("pear", "apple", "plum", "banana")]
    chosen = existence_candidates(target, metadata, 2, False, checked={digest("plum")})
    assert [word(entry.digest) for entry in chosen] == ["banana", "apple"]


# -- the HMAC key ------------------------------------------------------------------------------


def go_json_key(document: bytes) -> bytes:
    """What Docker's key is for a JSON document Go marshalled, written out by hand below."""
    return b"sha256:" + hashlib.sha256(document).hexdigest().encode()


@pytest.mark.parametrize(
    ("credentials", "document"),
    [
        (
            AuthConfig(username="user", password="secret"),
            b'{"username":"user","password":"secret"}',
        ),
        (AuthConfig(identity_token="refresh"), b'{"identitytoken":"refresh"}'),
        (
            AuthConfig(username="u", password="p", registry_token="bearer"),
            b'{"username":"u","password":"p","registrytoken":"bearer"}',
        ),
        # Go escapes HTML characters, keeps other non-ASCII text as UTF-8.
        (
            AuthConfig(username="ünï", password='<a&b>"\n'),
            '{"username":"ünï","password":"\\u003ca\\u0026b\\u003e\\"\\n"}'.encode(),
        ),
    ],
)
def test_hmac_key_is_docker_s(credentials: AuthConfig, document: bytes) -> None:
    assert hmac_key(credentials) == go_json_key(document)


def test_hmac_key_is_stable_and_ignores_the_server_address() -> None:
    here = AuthConfig(username="user", password="secret", server_address="127.0.0.1:5000")
    there = AuthConfig(username="user", password="secret", server_address="registry.example")
    other = AuthConfig(username="user", password="other", server_address="127.0.0.1:5000")
    assert hmac_key(here) == hmac_key(there) == hmac_key(AuthConfig("user", "secret"))
    assert hmac_key(here) != hmac_key(other)


def test_anonymous_pushes_have_no_hmac_key() -> None:
    key = hmac_key(AuthConfig(server_address="127.0.0.1:5000"))
    assert key == b""
    assert compute_hmac(key, digest("1"), "127.0.0.1:5000/a") == ""


def test_an_entry_recorded_with_the_same_credentials_is_mounted_first() -> None:
    key = hmac_key(AuthConfig(username="user", password="secret"))
    other = hmac_key(AuthConfig(username="someone", password="else"))
    mine = signed(key, "1", "127.0.0.1:5000/team/x")
    # Shares more of the target's path, but was recorded with other credentials.
    theirs = signed(other, "2", "127.0.0.1:5000/team/app/y")
    target = "127.0.0.1:5000/team/app"
    assert check_hmac(mine, key) and not check_hmac(theirs, key)
    assert mount_candidates(target, key, [mine, theirs], 4) == [mine, theirs]
    assert mount_candidates(target, other, [mine, theirs], 4) == [theirs, mine]
