"""The protocol core and the endpoint rules: pure functions, no network."""

from __future__ import annotations

import pytest

from engine.digest import Digest
from engine.errors import (
    BlobUnknownError,
    DeniedError,
    RegistryResponseError,
    SettingsError,
    TooManyRequestsError,
    UnauthorizedError,
)
from engine.registry import protocol
from engine.registry.endpoints import is_insecure, push_endpoints
from engine.settings import Settings

DIGEST = Digest("sha256:" + "ab" * 32)


@pytest.mark.parametrize(
    ("request_url", "location", "expected"),
    [
        (
            "http://r:5000/v2/a/blobs/uploads/",
            "/v2/a/blobs/uploads/u1?_state=x",
            "http://r:5000/v2/a/blobs/uploads/u1?_state=x",
        ),
        (
            "http://r:5000/v2/a/blobs/uploads/",
            "https://cdn.example/upload/u1",
            "https://cdn.example/upload/u1",
        ),
        ("https://r/v2/a/blobs/uploads/u1", "u2", "https://r/v2/a/blobs/uploads/u2"),
    ],
)
def test_location_may_be_relative_or_absolute(
    request_url: str, location: str, expected: str
) -> None:
    assert protocol.resolve_location(request_url, location) == expected


def test_a_missing_location_is_an_error() -> None:
    with pytest.raises(RegistryResponseError, match="Location"):
        protocol.resolve_location("http://r/v2/a/blobs/uploads/", None)


def test_commit_url_keeps_the_signed_state() -> None:
    url = protocol.commit_url("http://r/v2/a/blobs/uploads/u1?_state=abc%3D%3D", DIGEST)
    assert url == f"http://r/v2/a/blobs/uploads/u1?_state=abc%3D%3D&digest=sha256%3A{'ab' * 32}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://r/u", "http://r/u?mount=a%2Fb&from=c"),
        ("http://r/u?", "http://r/u?mount=a%2Fb&from=c"),
        ("http://r/u?k=v&", "http://r/u?k=v&mount=a%2Fb&from=c"),
        # The registry's own parameters stay exactly as sent, however they were encoded.
        ("http://r/u?_state=a+b%2Fc&x=%7E", "http://r/u?_state=a+b%2Fc&x=%7E&mount=a%2Fb&from=c"),
        ("http://r/u?k=v#frag", "http://r/u?k=v&mount=a%2Fb&from=c#frag"),
    ],
)
def test_with_query_appends(url: str, expected: str) -> None:
    assert protocol.with_query(url, mount="a/b", **{"from": "c"}) == expected


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        (
            404,
            b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}',
            BlobUnknownError,
            "blob unknown: blob unknown to registry",
        ),
        (401, b"", UnauthorizedError, "unauthorized: authentication required"),
        (403, b"<html><body>Forbidden</body></html>", DeniedError, "denied:"),
        (429, b"slow down", TooManyRequestsError, "toomanyrequests"),
        (
            502,
            b"<html>Bad Gateway</html>",
            RegistryResponseError,
            "unexpected HTTP status: 502 Bad Gateway",
        ),
        (
            400,
            b'{"errors": "not a list"}',
            RegistryResponseError,
            "unexpected HTTP status: 400 Bad Request",
        ),
        (
            400,
            b"\xff\xfe garbage",
            RegistryResponseError,
            "unexpected HTTP status: 400 Bad Request",
        ),
    ],
)
def test_error_answers_become_one_typed_error(
    status: int, body: bytes, cls: type[RegistryResponseError], message: str
) -> None:
    error = protocol.decode_error(status, body, method="PUT", url="http://r/v2/")
    assert type(error) is cls
    assert message in str(error)
    assert error.status == status


@pytest.mark.parametrize("status", [200, 500, 400])
def test_a_bare_unexpected_status_names_the_request(status: int) -> None:
    error = protocol.decode_error(status, b"", method="PUT", url="http://r/v2/a/manifests/v1")
    assert str(error).startswith("PUT http://r/v2/a/manifests/v1: received unexpected HTTP status")
    assert str(status) in str(error)


def test_every_error_an_answer_lists_is_told() -> None:
    """Distribution lists the digest it could not check and the blob it does not know."""
    body = (
        b'{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded'
        b' content"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry",'
        b'"detail":"sha256:ab"}]}'
    )
    error = protocol.decode_error(400, body, method="PUT", url="http://r/v2/a/manifests/v1")
    assert str(error) == (
        "digest invalid: provided digest did not match uploaded content; "
        "manifest blob unknown: blob unknown to registry"
    )
    assert error.codes == ("DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN")


BLOB = Digest.of(b"blob")


@pytest.mark.parametrize(
    ("headers", "size"),
    [
        ({"Content-Length": "4", "Docker-Content-Digest": str(BLOB)}, 4),
        # Object storage behind a redirect names no digest; its size still counts.
        ({"Content-Length": "4", "Content-Type": "application/octet-stream"}, 4),
        # A proxy's page answering 200: not the blob.
        ({"Content-Length": "1234", "Content-Type": "text/html; charset=utf-8"}, None),
        ({"Content-Length": "4", "Docker-Content-Digest": str(Digest.of(b"other"))}, None),
        ({"Docker-Content-Digest": str(BLOB)}, None),
        ({"Content-Length": "four", "Docker-Content-Digest": str(BLOB)}, None),
    ],
)
def test_what_a_head_answer_proves(headers: dict[str, str], size: int | None) -> None:
    assert protocol.present_size(headers, BLOB) == size


@pytest.mark.parametrize(
    ("headers", "held"),
    [
        ({"Docker-Content-Digest": str(BLOB), "Content-Type": "text/html"}, True),
        ({"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, True),
        ({"Docker-Content-Digest": str(Digest.of(b"other"))}, False),
        ({"Content-Type": "text/html; charset=utf-8"}, False),
    ],
    ids=["named", "unnamed", "another", "a page"],
)
def test_what_a_manifest_s_head_answer_proves(headers: dict[str, str], held: bool) -> None:
    assert protocol.names_digest(headers, BLOB) is held


@pytest.mark.parametrize(
    "url",
    [
        "https://r:5000/v2/",
        "https://r:5000/x#y",
        "https://r:5000/v2/?x=1",
    ],
)
def test_a_url_under_the_origin_prefix_has_that_origin(url: str) -> None:
    prefix = protocol.origin_prefix("https://r:5000/v2/a")
    assert prefix == "https://r:5000/"
    assert url.startswith(prefix)
    assert protocol.same_origin("https://r:5000/v2/a", url)


@pytest.mark.parametrize(
    "url",
    [
        "https://r:5000.evil/v2/",  # a longer host
        "https://r:50000/v2/",  # another port
        "https://r:5000@evil/v2/",  # the host after "@"
        "http://r:5000/v2/",  # another scheme
        "https://evil/r:5000/",  # the origin further along
    ],
)
def test_another_origin_never_starts_with_the_prefix(url: str) -> None:
    assert not url.startswith(protocol.origin_prefix("https://r:5000/v2/a"))
    assert not protocol.same_origin("https://r:5000/v2/a", url)


def test_same_origin() -> None:
    assert protocol.same_origin("https://r:5000/v2/", "https://r:5000/v2/a/blobs/uploads/x")
    assert not protocol.same_origin("https://r:5000/v2/", "https://cdn.r:5000/x")
    assert not protocol.same_origin("https://r/v2/", "http://r/v2/")


@pytest.mark.parametrize(
    ("host", "listed", "insecure"),
    [
        ("127.0.0.1:5000", (), True),
        ("127.9.9.9", (), True),
        ("localhost:5000", (), True),
        ("[::1]:5000", (), True),
        ("registry.example:5000", (), False),
        ("registry.example:5000", ("registry.example:5000",), True),
        ("registry.example", ("registry.example",), True),
        ("10.1.2.3:5000", ("10.0.0.0/8",), True),
        ("10.1.2.3:5000", ("192.168.0.0/16",), False),
    ],
)
def test_insecure_registries(host: str, listed: tuple[str, ...], insecure: bool) -> None:
    assert is_insecure(host, listed) is insecure


def test_https_only_for_a_secure_registry_and_http_only_as_fallback() -> None:
    assert [e.base for e in push_endpoints("registry.example:5000")] == [
        "https://registry.example:5000"
    ]
    insecure = push_endpoints("127.0.0.1:5000")
    assert [(e.base, e.verify_tls) for e in insecure] == [
        ("https://127.0.0.1:5000", False),
        ("http://127.0.0.1:5000", True),
    ]
    strict = push_endpoints("127.0.0.1:5000", loopback_insecure=False)
    assert [(e.base, e.verify_tls) for e in strict] == [("https://127.0.0.1:5000", True)]


def test_docker_hub_is_pushed_to_registry_1() -> None:
    assert [e.base for e in push_endpoints("docker.io")] == ["https://registry-1.docker.io"]


def test_daemon_json_settings() -> None:
    settings = Settings.from_json(
        {"insecure-registries": ["a:5000"], "max-concurrent-uploads": 3}, "daemon.json"
    )
    assert settings == Settings(("a:5000",), 3, True)
    with pytest.raises(SettingsError, match="max-concurrent-uploads"):
        Settings.from_json({"max-concurrent-uploads": 0}, "daemon.json")
    with pytest.raises(SettingsError, match="insecure-registries"):
        Settings.from_json({"insecure-registries": "a"}, "daemon.json")


@pytest.mark.parametrize(
    ("header", "offset"),
    [
        (None, 0),
        ("0-1023", 1024),
        ("bytes=0-1023", 1024),
        ("0-0", None),  # Distribution: empty, or one byte — cannot tell, so start again
        ("0--1", 0),
        ("garbage", None),
    ],
)
def test_committed_offset_from_range(header: str | None, offset: int | None) -> None:
    assert protocol.committed_offset(header) == offset
