"""Docker's reference grammar at its edges, as docker/distribution 2.8 and its tests settle them."""

from __future__ import annotations

import re
from typing import NamedTuple

import pytest

from engine.digest import Digest
from engine.errors import InvalidReferenceError
from engine.reference import (
    DEFAULT_TAG,
    Reference,
    familiar_name,
    familiar_string,
    parse_named,
    parse_normalized_named,
    with_default_tag,
)

HEX64 = "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
IDENTIFIER = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
SHA256 = f"sha256:{HEX64}"
SHA384 = "sha384:" + "f" * 96
SHA512 = "sha512:" + "f" * 128
SONG = "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev"

INVALID = "invalid reference format"
NOT_LOWERCASE = "repository name must be lowercase"
INVALID_NOT_LOWERCASE = f"{INVALID}: {NOT_LOWERCASE}"
TOO_LONG = "repository name must not be more than 255 characters"


class Parsed(NamedTuple):
    domain: str
    path: str
    tag: str | None
    digest: str | None
    string: str
    familiar: str


class Fails(NamedTuple):
    message: str


def hub(path: str, tag: str | None = None, digest: str | None = None, familiar: str = "") -> Parsed:
    """A Docker Hub row: the canonical string is built from the same parts Docker joins."""
    suffix = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return Parsed("docker.io", path, tag, digest, f"docker.io/{path}{suffix}", familiar + suffix)


def at(domain: str, path: str, tag: str | None = None, digest: str | None = None) -> Parsed:
    """A row for another registry: the familiar string is the canonical one."""
    suffix = (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    name = f"{domain}/{path}" if domain else path
    return Parsed(domain, path, tag, digest, name + suffix, name + suffix)


CASES: list[tuple[str, Parsed | Fails]] = [
    # Docker Hub normalisation: docker.io, library/, index.docker.io.
    ("ubuntu", hub("library/ubuntu", familiar="ubuntu")),
    ("ubuntu:22.04", hub("library/ubuntu", "22.04", familiar="ubuntu")),
    ("library/ubuntu", hub("library/ubuntu", familiar="ubuntu")),
    ("docker.io/ubuntu", hub("library/ubuntu", familiar="ubuntu")),
    ("docker.io/library/ubuntu", hub("library/ubuntu", familiar="ubuntu")),
    ("index.docker.io/ubuntu", hub("library/ubuntu", familiar="ubuntu")),
    (
        "index.docker.io/library/debian:bookworm",
        hub("library/debian", "bookworm", familiar="debian"),
    ),
    ("index.docker.io/fooo/bar", hub("fooo/bar", familiar="fooo/bar")),
    ("docker.io/library/foo/bar", hub("library/foo/bar", familiar="library/foo/bar")),
    ("dmcgowan/myapp:latest", hub("dmcgowan/myapp", "latest", familiar="dmcgowan/myapp")),
    ("other/library", hub("other/library", familiar="other/library")),
    ("store/foo/bar", hub("store/foo/bar", familiar="store/foo/bar")),
    ("library", hub("library/library", familiar="library")),
    ("ubuntu-12.04-base", hub("library/ubuntu-12.04-base", familiar="ubuntu-12.04-base")),
    ("docker---rules/docker", hub("docker---rules/docker", familiar="docker---rules/docker")),
    ("dock__er/docker", hub("dock__er/docker", familiar="dock__er/docker")),
    ("jess/t", hub("jess/t", familiar="jess/t")),
    ("test_com/foo", hub("test_com/foo", familiar="test_com/foo")),
    # The first component is a host only with ".", ":" or "localhost"; otherwise it is a tag.
    ("localhost/foo", at("localhost", "foo")),
    ("localhost:5000/a/b:v1", at("localhost:5000", "a/b", "v1")),
    ("localhost", hub("library/localhost", familiar="localhost")),
    ("localhost:5000", hub("library/localhost", "5000", familiar="localhost")),
    ("foo_bar.com:8080", hub("library/foo_bar.com", "8080", familiar="foo_bar.com")),
    ("127.0.0.1:5000/debian", at("127.0.0.1:5000", "debian")),
    ("192.168.1.10/team/app:1.0", at("192.168.1.10", "team/app", "1.0")),
    ("example.com/private/moonbase", at("example.com", "private/moonbase")),
    ("example.com:8000/privatebase", at("example.com:8000", "privatebase")),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        at("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag"),
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        at("b.gcr.io", "test.example.com/my-app", "test.example.com"),
    ),
    ("xn--n3h.com/myimage:xn--n3h.com", at("xn--n3h.com", "myimage", "xn--n3h.com")),
    # Upper case: allowed in the host (and not normalised there), refused in the path.
    ("Example.COM:8000/app", at("Example.COM:8000", "app")),
    ("Docker.io/foo", at("Docker.io", "foo")),
    ("INDEX.DOCKER.IO/foo", at("INDEX.DOCKER.IO", "foo")),
    ("foo/Bar", Fails(INVALID_NOT_LOWERCASE)),
    ("Ubuntu", Fails(INVALID_NOT_LOWERCASE)),
    ("Uppercase/lowercase:tag", Fails(INVALID_NOT_LOWERCASE)),
    ("test:5000/Uppercase/lowercase:tag", Fails(INVALID_NOT_LOWERCASE)),
    ("A_B.com/foo", Fails(NOT_LOWERCASE)),
    # A host that is no domain but a valid path component: Docker keeps the whole as a path.
    ("a_b.com/x", at("", "a_b.com/x")),
    # Tags: [\w][\w.-]{0,127} with ASCII \w; upper case allowed.
    ("ubuntu:Latest_TAG", hub("library/ubuntu", "Latest_TAG", familiar="ubuntu")),
    ("ubuntu:_x", hub("library/ubuntu", "_x", familiar="ubuntu")),
    ("ubuntu:" + "t" * 128, hub("library/ubuntu", "t" * 128, familiar="ubuntu")),
    ("ubuntu:" + "t" * 129, Fails(INVALID)),
    ("ubuntu:-x", Fails(INVALID)),
    ("ubuntu:.x", Fails(INVALID)),
    ("ubuntu:", Fails(INVALID)),
    ("ubuntu:café", Fails(INVALID)),
    ("ubuntu:a:b", Fails(INVALID)),
    # 64-hex names are image IDs, unless something makes them a name.
    (
        IDENTIFIER,
        Fails(
            f"invalid repository name ({IDENTIFIER}), cannot specify 64-byte hexadecimal strings"
        ),
    ),
    (f"docker.io/{IDENTIFIER}", hub(f"library/{IDENTIFIER}", familiar=IDENTIFIER)),
    (f"{IDENTIFIER}:latest", hub(f"library/{IDENTIFIER}", "latest", familiar=IDENTIFIER)),
    (IDENTIFIER[:63], hub(f"library/{IDENTIFIER[:63]}", familiar=IDENTIFIER[:63])),
    (IDENTIFIER.upper(), Fails(INVALID_NOT_LOWERCASE)),
    (SONG, hub(f"library/{SONG}", familiar=SONG)),
    # 255 characters, counted on the normalised name with its domain.
    ("a" * 237, hub("library/" + "a" * 237, familiar="a" * 237)),
    ("a" * 238, Fails(TOO_LONG)),
    ("localhost/" + "a" * 245, at("localhost", "a" * 245)),
    ("localhost/" + "a" * 246, Fails(TOO_LONG)),
    ("a/" * 127 + "a:tag", Fails(TOO_LONG)),
    # Digests: known algorithms, exact lengths, lower-case hex (go-digest's Validate).
    (f"busybox:latest@{SHA256}", hub("library/busybox", "latest", SHA256, familiar="busybox")),
    (f"redis@{SHA256}", hub("library/redis", None, SHA256, familiar="redis")),
    (f"localhost:5000/foo@{SHA512}", at("localhost:5000", "foo", None, SHA512)),
    (f"foo:1@{SHA384}", hub("library/foo", "1", SHA384, familiar="foo")),
    ("foo@sha512:" + "f" * 64, Fails("invalid checksum digest length")),
    ("foo@sha256:" + "f" * 34, Fails("invalid checksum digest length")),
    ("foo@sha256:" + "f" * 31, Fails(INVALID)),
    ("foo@md5:" + "f" * 32, Fails("unsupported digest algorithm")),
    ("foo@sha256+b64:" + HEX64, Fails("unsupported digest algorithm")),
    (f"foo:tag@SHA256:{HEX64}", Fails("invalid checksum digest format")),
    (f"foo@sha256:{HEX64.upper()}", Fails("invalid checksum digest format")),
    # Docker lower-cases everything up to the first ":" as the name, digest algorithm included.
    (f"foo@SHA256:{HEX64}", Fails(INVALID_NOT_LOWERCASE)),
    (f"foo@{SHA256}@{SHA256}", Fails(INVALID)),
    (f"@{SHA256}", Fails(INVALID)),
    # IPv6 hosts are not in the 2.8 grammar.
    ("[::1]:5000/foo", Fails(INVALID)),
    ("[2001:db8::1]/foo", Fails(INVALID)),
    ("::1/foo", Fails(INVALID)),
    # Go's $ does not match before a trailing newline.
    ("ubuntu\n", Fails(INVALID)),
    ("ubuntu:latest\n", Fails(INVALID)),
    (f"localhost:5000/foo@{SHA256}\n", Fails(INVALID)),
    # Non-ASCII: Go's strings.ToLower maps rune by rune (İ → i; Python's str.lower gives "i̇").
    ("İ.com/foo", Fails(NOT_LOWERCASE)),
    ("\u212a.com/foo", Fails(NOT_LOWERCASE)),
    ("foo/İ", Fails(INVALID_NOT_LOWERCASE)),
    ("foo/é", Fails(INVALID)),
    # A byte that is not UTF-8 (surrogateescape): Go's ToLower turns it into U+FFFD.
    ("foo/\udcff", Fails(INVALID_NOT_LOWERCASE)),
    ("\udcff.com/foo", Fails(INVALID)),
    # Plain malformed names.
    ("", Fails(INVALID)),
    (":justtag", Fails(INVALID)),
    ("-docker", Fails(INVALID)),
    ("docker-/docker", Fails(INVALID)),
    ("docker/", Fails(INVALID)),
    ("docker///docker", Fails(INVALID)),
    ("dock..er/docker", Fails(INVALID)),
    ("dock_.er/docker", Fails(INVALID)),
    ("____/____", Fails(INVALID)),
    ("https://github.com/docker/docker", Fails(INVALID)),
    ("aa/asdf$$^/aa", Fails(INVALID)),
    ("foo bar", Fails(INVALID)),
]

VALID = [(text, expected) for text, expected in CASES if isinstance(expected, Parsed)]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[repr(text)[:60] for text, _ in CASES])
def test_parse_normalized_named(text: str, expected: Parsed | Fails) -> None:
    if isinstance(expected, Fails):
        with pytest.raises(InvalidReferenceError) as raised:
            parse_normalized_named(text)
        # Docker's own words, and the text they are about.
        assert raised.value.reason == expected.message
        assert raised.value.reference == text
        return
    ref = parse_normalized_named(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == expected[:4]
    assert str(ref) == expected.string
    assert familiar_string(ref) == expected.familiar


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[repr(text)[:60] for text, _ in VALID])
def test_canonical_string_parses_back_to_the_same_reference(text: str, expected: Parsed) -> None:
    ref = parse_normalized_named(text)
    assert parse_normalized_named(str(ref)) == ref
    assert parse_named(str(ref)) == ref


def test_familiar_string_parses_back_unless_it_looks_like_an_image_id() -> None:
    for text, _ in VALID:
        ref = parse_normalized_named(text)
        if re.fullmatch("[a-f0-9]{64}", familiar_string(ref)):
            continue  # Docker's own quirk: "docker.io/<64 hex>" prints as a bare image ID
        assert parse_normalized_named(familiar_string(ref)) == ref, text


def test_the_digest_is_a_digest_value() -> None:
    ref = parse_normalized_named(f"redis@{SHA256}")
    assert isinstance(ref.digest, Digest)
    assert ref.digest.algorithm == "sha256"
    assert ref.digest.hex == HEX64


def test_name_is_domain_and_path() -> None:
    assert parse_normalized_named("ubuntu:1").name == "docker.io/library/ubuntu"
    assert parse_normalized_named("localhost:5000/a/b@" + SHA256).name == "localhost:5000/a/b"
    assert parse_normalized_named("a_b.com/x").name == "a_b.com/x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ubuntu", "ubuntu"),
        ("docker.io/library/foo/bar", "library/foo/bar"),
        ("user/repo:1", "user/repo"),
        ("localhost:5000/a/b", "localhost:5000/a/b"),
        ("example.com/library/x", "example.com/library/x"),
    ],
)
def test_familiar_name(text: str, expected: str) -> None:
    assert familiar_name(parse_normalized_named(text)) == expected


@pytest.mark.parametrize(
    "text",
    ["docker.io/library/ubuntu", "docker.io/library/ubuntu:22.04", f"localhost:5000/a@{SHA256}"],
)
def test_parse_named_accepts_canonical_text(text: str) -> None:
    assert str(parse_named(text)) == text


@pytest.mark.parametrize(
    "text", ["ubuntu", "library/ubuntu", "docker.io/ubuntu", "index.docker.io/library/ubuntu"]
)
def test_parse_named_refuses_familiar_text(text: str) -> None:
    with pytest.raises(InvalidReferenceError, match="repository name must be canonical"):
        parse_named(text)


def test_parse_named_reports_grammar_errors_first() -> None:
    with pytest.raises(InvalidReferenceError, match=INVALID_NOT_LOWERCASE):
        parse_named("docker.io/library/Foo")


def test_with_tag_sets_the_tag_and_drops_the_digest() -> None:
    ref = parse_normalized_named(f"localhost:5000/app:old@{SHA256}")
    tagged = ref.with_tag("v2.0_RC-1")
    assert (tagged.domain, tagged.path, tagged.tag, tagged.digest) == (
        "localhost:5000",
        "app",
        "v2.0_RC-1",
        None,
    )
    assert ref.tag == "old"  # the original is unchanged


@pytest.mark.parametrize("tag", ["", "-x", ".x", "t" * 129, "a/b", "café", "latest\n"])
def test_with_tag_refuses_invalid_tags(tag: str) -> None:
    ref = parse_normalized_named("ubuntu")
    with pytest.raises(InvalidReferenceError, match="invalid tag format"):
        ref.with_tag(tag)


def test_with_tag_accepts_the_longest_tag() -> None:
    assert parse_normalized_named("ubuntu").with_tag("t" * 128).tag == "t" * 128


def test_with_digest_keeps_the_tag() -> None:
    ref = parse_normalized_named("ubuntu:22.04").with_digest(SHA512)
    assert str(ref) == f"docker.io/library/ubuntu:22.04@{SHA512}"
    assert isinstance(ref.digest, Digest)


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ("foo", "invalid digest format"),
        ("sha256:" + "f" * 31, "invalid digest format"),
        ("sha256:" + "f" * 63, "invalid checksum digest length"),
        ("md5:" + "f" * 32, "unsupported digest algorithm"),
        (f"sha256:{HEX64.upper()}", "invalid checksum digest format"),
    ],
)
def test_with_digest_refuses_invalid_digests(digest: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError) as raised:
        parse_normalized_named("ubuntu").with_digest(digest)
    assert str(raised.value) == message


def test_trim_keeps_only_the_name() -> None:
    ref = parse_normalized_named(f"localhost:5000/a/b:v1@{SHA256}")
    assert ref.trim() == Reference("localhost:5000", "a/b")
    assert str(ref.trim()) == "localhost:5000/a/b"


def test_with_default_tag_adds_latest_to_a_bare_name() -> None:
    ref = with_default_tag(parse_normalized_named("ubuntu"))
    assert ref.tag == DEFAULT_TAG == "latest"
    assert str(ref) == "docker.io/library/ubuntu:latest"


@pytest.mark.parametrize("text", ["ubuntu:22.04", f"ubuntu@{SHA256}", f"ubuntu:1@{SHA256}"])
def test_with_default_tag_leaves_tagged_or_digested_references(text: str) -> None:
    ref = parse_normalized_named(text)
    assert with_default_tag(ref) == ref


def test_reference_is_an_immutable_hashable_value() -> None:
    ref = parse_normalized_named("ubuntu:22.04")
    with pytest.raises(AttributeError):
        ref.tag = "other"
    assert ref == parse_normalized_named("docker.io/library/ubuntu:22.04")
    assert len({ref, parse_normalized_named("index.docker.io/ubuntu:22.04")}) == 1


def test_invalid_reference_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_normalized_named("Ubuntu")


@pytest.mark.timeout(60)  # a hang guard: Python's backtracking must not go exponential
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a" * 20000 + "!", INVALID),
        ("a-" * 10000 + "!", INVALID),
        ("a." * 10000 + "/x!", INVALID),
        ("a/" * 10000 + "a", TOO_LONG),
        ("a" * 20000 + ":" + "t" * 200, INVALID),
        ("foo@sha256:" + "f" * 20000, "invalid checksum digest length"),
    ],
)
def test_long_inputs_get_docker_s_answer(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError) as raised:
        parse_normalized_named(text)
    assert raised.value.reason == message and raised.value.reference == text
    assert len(str(raised.value)) < 200, "the message names the text, shortened"
