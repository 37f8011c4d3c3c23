"""The pure parts of ``hoist serve``: API versions, ``X-Registry-Auth``, addresses, errors."""

from __future__ import annotations

import base64
import json
import os
import socket

import pytest

from engine.digest import Digest
from engine.errors import (
    DigestReferenceError,
    HoistError,
    ImageNotFoundError,
    InvalidReferenceError,
    RegistryError,
    StoreError,
    UnauthorizedError,
    UsageError,
)
from engine.push.compression import Compression
from engine.registry.auth_config import AuthConfig
from engine.serve import wire
from engine.serve.address import Address, listening_address, parse_address
from engine.store import ImageDetails, ImageSummary


def _header(document: object, *, padded: bool = True) -> str:
    encoded = base64.urlsafe_b64encode(json.dumps(document).encode()).decode()
    return encoded if padded else encoded.rstrip("=")


@pytest.mark.parametrize("header", [None, "", "  ", "e30=", "e30"])
def test_an_empty_registry_auth_is_anonymous(header: str | None) -> None:
    assert wire.decode_registry_auth(header) == AuthConfig()


@pytest.mark.parametrize("padded", [True, False])
def test_registry_auth_carries_docker_auth_config(padded: bool) -> None:
    document = {
        "username": "ann",
        "password": "pw?>~",  # base64url's own characters: - and _ instead of + and /
        "serveraddress": "127.0.0.1:5000",
        "identitytoken": "",
        "email": "ignored@example",
    }
    decoded = wire.decode_registry_auth(_header(document, padded=padded))
    assert decoded == AuthConfig(username="ann", password="pw?>~", server_address="127.0.0.1:5000")


def test_registry_auth_identity_token() -> None:
    decoded = wire.decode_registry_auth(_header({"identitytoken": "refresh"}))
    assert decoded.identity_token == "refresh"
    assert not decoded.anonymous


@pytest.mark.parametrize(
    "header",
    [
        "%%%not-base64%%%",
        base64.urlsafe_b64encode(b"{not json").decode(),
        _header(["a", "list"]),
        _header({"username": 5}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_malformed_registry_auth_is_a_400_that_quotes_nothing(header: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.decode_registry_auth(header)
    assert caught.value.status == 400
    assert header not in caught.value.message
    assert caught.value.message.startswith("invalid X-Registry-Auth header")


def test_registry_config_carries_credentials_by_registry() -> None:
    """``docker build``'s header: a JSON object of AuthConfigs keyed by registry."""
    document = {
        "127.0.0.1:5000": {"username": "ann", "password": "pw?>~"},
        "[::1]:5001": {"identitytoken": "refresh"},
    }
    assert wire.decode_registry_config(_header(document, padded=False)) == {
        "127.0.0.1:5000": AuthConfig(username="ann", password="pw?>~"),
        "[::1]:5001": AuthConfig(identity_token="refresh"),
    }
    assert wire.decode_registry_config(None) == wire.decode_registry_config(" ") == {}
    # Keyed as config.json is, by the docker CLI: by the domain a reference names here.
    keyed = {"https://index.docker.io/v1/": {"username": "hub"}, "http://127.0.0.1:5000/": {}}
    assert wire.decode_registry_config(_header(keyed)) == {
        "docker.io": AuthConfig(username="hub"),
        "127.0.0.1:5000": AuthConfig(),
    }


@pytest.mark.parametrize(
    "document",
    [["a", "list"], {"127.0.0.1:5000": "secret"}, {"127.0.0.1:5000": {"password": 5}}],
)
def test_a_malformed_registry_config_is_a_400_that_quotes_nothing(document: object) -> None:
    header = _header(document)
    with pytest.raises(wire.WireError) as caught:
        wire.decode_registry_config(header)
    assert caught.value.status == 400
    assert "secret" not in caught.value.message and header not in caught.value.message
    assert "X-Registry-Config" in caught.value.message


def test_a_batch_names_its_images_in_its_body() -> None:
    assert wire.batch_refs({"Refs": ["a:1", "b"]}) == ["a:1", "b"]
    for document in ({"Refs": []}, {"Refs": "a:1"}, {"Refs": [1]}, ["a:1"], None):
        with pytest.raises(wire.WireError) as caught:
            wire.batch_refs(document)
        assert caught.value.status == 400


def test_auth_body_is_an_auth_config() -> None:
    body = {"username": "ann", "password": "pw", "serveraddress": "127.0.0.1:5000"}
    assert wire.auth_config_of(body) == AuthConfig("ann", "pw", server_address="127.0.0.1:5000")
    with pytest.raises(wire.WireError):
        wire.auth_config_of([])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1.48/images/json", ("1.48", "/images/json")),
        ("/v1.24/_ping", ("1.24", "/_ping")),
        ("/images/json", (None, "/images/json")),
        ("/v1/images/json", (None, "/v1/images/json")),
    ],
)
def test_split_version(path: str, expected: tuple[str | None, str]) -> None:
    assert wire.split_version(path) == expected


@pytest.mark.parametrize("version", [None, "1.24", "1.41", "1.48"])
def test_versions_in_range_pass(version: str | None) -> None:
    wire.check_version(version)


def test_a_too_new_version_is_refused_as_dockerd_does() -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.check_version("1.99")
    assert caught.value.status == 400
    assert caught.value.message == (
        "client version 1.99 is too new. Maximum supported API version is 1.48"
    )


def test_a_too_old_version_is_refused_as_dockerd_does() -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.check_version("1.12")
    assert caught.value.status == 400
    assert "client version 1.12 is too old. Minimum supported API version is 1.24" in str(
        caught.value
    )


def test_versions_compare_as_numbers_not_text() -> None:
    wire.check_version("1.30")  # "1.30" < "1.48" as numbers; "1.5" would be too old
    with pytest.raises(wire.WireError):
        wire.check_version("1.5")


def test_ping_and_version_payloads() -> None:
    headers = wire.ping_headers()
    assert headers["Api-Version"] == wire.API_VERSION
    assert headers["Docker-Experimental"] == "false"
    assert headers["OSType"] == "linux"
    version = wire.version_payload()
    assert version["ApiVersion"] == wire.API_VERSION
    assert version["MinAPIVersion"] == wire.MIN_API_VERSION
    assert version["Os"] == "linux"
    assert version["Components"][0]["Name"] == "Engine"


def test_error_body() -> None:
    assert wire.error_body("No such image: app:v1") == {"message": "No such image: app:v1"}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ImageNotFoundError("No such image: x"), 404),
        (InvalidReferenceError("invalid reference format", "A"), 400),
        (DigestReferenceError(), 400),
        (UnauthorizedError("unauthorized", status=401), 401),
        (StoreError("conflict: unable to delete 0123 (must be forced)"), 409),
        (StoreError("unreadable"), 500),
        (RegistryError("connection refused"), 500),
    ],
)
def test_statuses_of_errors(error: HoistError, status: int) -> None:
    assert wire.status_of(error) == status


def test_removal_records() -> None:
    assert wire.removal_record("Untagged: app:v1") == {"Untagged": "app:v1"}
    assert wire.removal_record("Deleted: sha256:ab") == {"Deleted": "sha256:ab"}


def test_push_reference() -> None:
    assert wire.push_reference("127.0.0.1:5000/app", "v1") == "127.0.0.1:5000/app:v1"
    assert wire.push_reference("app", "") == "app"
    for name, tag in [("app@sha256:" + "a" * 64, ""), ("app", "sha256:" + "a" * 64)]:
        with pytest.raises(wire.WireError) as caught:
            wire.push_reference(name, tag)
        assert caught.value.status == 400
    with pytest.raises(wire.WireError):
        wire.push_reference("UPPER", "v1")


def test_familiar_name() -> None:
    assert wire.familiar_name("docker.io/library/app:v1") == "app"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:///run/hoist.sock", Address(path="/run/hoist.sock")),
        ("tcp://127.0.0.1:2375", Address(host="127.0.0.1", port=2375)),
        ("tcp://localhost:2375", Address(host="localhost", port=2375)),
        ("tcp://[::1]:2375", Address(host="::1", port=2375)),
    ],
)
def test_addresses(text: str, expected: Address) -> None:
    assert parse_address(text) == expected
    assert str(expected).startswith(text.split(":", 1)[0])


@pytest.mark.parametrize("text", ["tcp://0.0.0.0:2375", "tcp://192.168.1.4:2375"])
def test_a_network_address_is_refused_and_says_why(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        listening_address(text)
    assert "without --tlsverify" in str(caught.value)
    assert "certificate" in str(caught.value)


@pytest.mark.parametrize("text", ["unix://", "http://x", "tcp://127.0.0.1", "tcp://:80"])
def test_malformed_addresses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_address(text)


def _summary(repository: str, tag: str, image: str, created: str | None = None) -> ImageSummary:
    return ImageSummary(repository, tag, Digest("sha256:" + image * 64), created, 1000)


def test_images_group_tags_by_image() -> None:
    rows = [
        _summary("app", "v1", "a", "2024-01-01T00:00:00Z"),
        _summary("127.0.0.1:5000/app", "v1", "a", "2024-01-01T00:00:00Z"),
        _summary("<none>", "<none>", "b", "not a time"),
    ]
    listed = wire.images_json(rows)
    assert [entry["RepoTags"] for entry in listed] == [["app:v1", "127.0.0.1:5000/app:v1"], []]
    assert listed[0]["Id"] == "sha256:" + "a" * 64
    assert listed[0]["Created"] == 1704067200
    assert listed[1]["Created"] == 0
    assert listed[0]["Size"] == 1000


def test_images_reference_filter() -> None:
    rows = [_summary("app", "v1", "a"), _summary("app", "v2", "a"), _summary("other", "v1", "b")]
    assert wire.reference_filters('{"reference": {"app": true}}') == ["app"]
    assert wire.reference_filters('{"reference": ["app:v*"]}') == ["app:v*"]
    assert wire.reference_filters(None) == []
    only_app = wire.images_json(rows, ["app"])
    assert [entry["RepoTags"] for entry in only_app] == [["app:v1", "app:v2"]]
    assert [e["RepoTags"] for e in wire.images_json(rows, ["*:v1"])] == [["app:v1"], ["other:v1"]]
    for bad in ("{", "[]", '{"reference": [1]}'):
        with pytest.raises(wire.WireError):
            wire.reference_filters(bad)


def test_inspect_shows_what_the_config_says() -> None:
    config = {
        "architecture": "arm64",
        "variant": "v8",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["A=1"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "c" * 64]},
    }
    details = ImageDetails(
        Digest("sha256:" + "a" * 64),
        json.dumps(config).encode(),
        42,
        ("app:v1",),
        ("app@sha256:" + "d" * 64,),
    )
    shown = wire.inspect_json(details)
    assert shown["Id"] == "sha256:" + "a" * 64
    assert shown["RepoTags"] == ["app:v1"]
    assert shown["RepoDigests"] == ["app@sha256:" + "d" * 64]
    assert (shown["Os"], shown["Architecture"], shown["Variant"]) == ("linux", "arm64", "v8")
    assert shown["RootFS"] == {"Type": "layers", "Layers": ["sha256:" + "c" * 64]}
    assert shown["Size"] == 42
    assert shown["Config"] == {"Env": ["A=1"]}


def test_inspect_of_an_odd_config_still_answers() -> None:
    for raw in (b"not json", b"[]", b'{"rootfs": 5}'):
        shown = wire.inspect_json(ImageDetails(Digest("sha256:" + "a" * 64), raw, 0, (), ()))
        assert shown["RootFS"] == {"Type": "layers", "Layers": []}
        assert "Variant" not in shown


def test_a_network_address_is_served_only_with_tlsverify() -> None:
    with pytest.raises(UsageError, match="without --tlsverify"):
        listening_address("tcp://0.0.0.0:2376")
    served = listening_address("tcp://0.0.0.0:2376", tls_verify=True)
    assert (served.host, served.port) == ("0.0.0.0", 2376)


def test_the_peer_of_a_unix_socket_is_this_user() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right, socket.socket(socket.AF_INET) as tcp:
        assert wire.peer_uid(left) == os.getuid()
        assert wire.peer_uid(tcp) is None
    assert wire.peer_uid(None) is None


@pytest.mark.parametrize(
    ("source", "peer", "all_tags", "status"),
    [
        ("/tmp/layout", None, False, 403),  # TCP: no peer to trust
        ("/tmp/layout", os.getuid() + 1, False, 403),
        ("layout", os.getuid(), False, 400),
        ("/tmp/layout", os.getuid(), True, 400),
    ],
)
def test_from_is_for_this_users_clients_and_absolute_paths(
    source: str, peer: int | None, all_tags: bool, status: int
) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.check_source(source, peer, all_tags=all_tags)
    assert caught.value.status == status
    assert wire.check_source("/tmp/layout", os.getuid(), all_tags=False) == "/tmp/layout"


def test_compression_comes_from_hoists_own_parameters() -> None:
    assert wire.compression_of({}) == Compression()
    assert wire.compression_of({"compression": "zstd"}) == Compression.of("zstd")
    assert wire.compression_of({"compression": "zstd", "compressionLevel": "9"}).level == 9
    for bad in ({"compression": "lz4"}, {"compressionLevel": "x"}, {"compressionLevel": "7"}):
        with pytest.raises(wire.WireError) as caught:
            wire.compression_of(bad)
        assert caught.value.status == 400
