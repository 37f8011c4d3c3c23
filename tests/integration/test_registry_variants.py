"""The registry variants really enforce what they should, checked with independent clients only.

Each variant is asked with ``urllib``/``ssl`` from the standard library and with ``skopeo``;
Hoist itself is not involved here (its own auth tests use these fixtures).
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import Skopeo
from tests.support.registry import SecuredRegistry
from tests.support.sample import LayerSpec, OciSampleImage, write_oci_layout
from tests.support.tls import CertificateAuthority
from tests.support.tokenserver import TokenServer, start_token_server

pytestmark = pytest.mark.integration

TAG = "v1"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _request(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    context: ssl.SSLContext | None = None,
) -> Answer:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url, headers=dict(headers or {}), data=data)
    try:
        with opener.open(request, timeout=10) as answer:
            return Answer(answer.status, answer.headers, answer.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


def _basic(username: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OciSampleImage]:
    """A tiny image in an OCI layout, for skopeo to copy into each variant."""
    layout = tmp_path_factory.mktemp("sample") / "layout"
    image = write_oci_layout(layout, [LayerSpec(size=4096, seed=7)], TAG)
    return layout, image


def _copy(skopeo: Skopeo, layout: Path, ref: str, *options: str) -> tuple[int, str]:
    result = skopeo.run("copy", "--preserve-digests", *options, f"oci:{layout}:{TAG}", ref)
    return result.returncode, result.stderr


def _inspect_digest(skopeo: Skopeo, ref: str, *options: str) -> str:
    result = skopeo.run("inspect", *options, ref)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["Digest"])


# htpasswd Basic auth


def test_basic_auth_wants_credentials(basic_auth_registry: SecuredRegistry) -> None:
    anonymous = _request(f"{basic_auth_registry.url}/v2/")
    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")

    good = _basic(basic_auth_registry.username, basic_auth_registry.password)
    assert _request(f"{basic_auth_registry.url}/v2/", headers=good).status == 200

    wrong = _basic(basic_auth_registry.username, "not-the-password")
    assert _request(f"{basic_auth_registry.url}/v2/", headers=wrong).status == 401


def test_skopeo_copies_into_basic_auth_registry(
    basic_auth_registry: SecuredRegistry, skopeo: Skopeo, sample: tuple[Path, OciSampleImage]
) -> None:
    layout, image = sample
    ref = f"docker://{basic_auth_registry.host}/variants/basic:{TAG}"
    plain_http = "--dest-tls-verify=false"

    code, stderr = _copy(skopeo, layout, ref, plain_http, "--dest-creds", "nobody:wrong")
    assert code != 0
    assert "unauthorized" in stderr.lower()

    code, stderr = _copy(skopeo, layout, ref, plain_http, "--dest-creds", basic_auth_registry.creds)
    assert code == 0, stderr
    creds = ("--tls-verify=false", "--creds", basic_auth_registry.creds)
    assert _inspect_digest(skopeo, ref, *creds) == image.manifest_digest


# TLS with a CA made at test time


def test_tls_registry_trusts_only_its_ca(tls_registry: SecuredRegistry) -> None:
    assert tls_registry.url.startswith("https://")
    assert _request(f"{tls_registry.url}/v2/", context=tls_registry.ssl_context()).status == 200
    # The certificate names localhost too.
    by_name = f"https://localhost:{tls_registry.registry.port}/v2/"
    assert _request(by_name, context=tls_registry.ssl_context()).status == 200

    with pytest.raises(urllib.error.URLError) as refused:
        _request(f"{tls_registry.url}/v2/", context=ssl.create_default_context())
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)

    # Go's TLS server answers a plain http request with 400, never with the API.
    assert _request(f"http://{tls_registry.host}/v2/").status == 400


def test_certs_d_layout(tls_registry: SecuredRegistry, mtls_registry: SecuredRegistry) -> None:
    tls_dir = tls_registry.cert_dir
    assert tls_dir is not None and tls_dir.name == tls_registry.host
    assert sorted(p.name for p in tls_dir.iterdir()) == ["ca.crt"]

    mtls_dir = mtls_registry.cert_dir
    assert mtls_dir is not None
    assert sorted(p.name for p in mtls_dir.iterdir()) == ["ca.crt", "client.cert", "client.key"]
    assert (mtls_dir / "client.key").stat().st_mode & 0o077 == 0
    # What was laid out is enough to get in.
    context = ssl.create_default_context(cafile=mtls_dir / "ca.crt")
    context.load_cert_chain(mtls_dir / "client.cert", mtls_dir / "client.key")
    assert _request(f"{mtls_registry.url}/v2/", context=context).status == 200


def test_skopeo_copies_into_tls_registry_with_certs_d(
    tls_registry: SecuredRegistry,
    skopeo: Skopeo,
    sample: tuple[Path, OciSampleImage],
    tmp_path: Path,
) -> None:
    layout, image = sample
    ref = f"docker://{tls_registry.host}/variants/tls:{TAG}"
    no_certs = tmp_path / "empty-cert-dir"
    no_certs.mkdir()

    code, stderr = _copy(skopeo, layout, ref, "--dest-cert-dir", str(no_certs))
    assert code != 0
    assert "certificate" in stderr.lower()

    code, stderr = _copy(skopeo, layout, ref, "--dest-cert-dir", str(tls_registry.cert_dir))
    assert code == 0, stderr
    assert _inspect_digest(skopeo, ref, "--cert-dir", str(tls_registry.cert_dir)) == (
        image.manifest_digest
    )


# Mutual TLS


def test_mtls_registry_requires_a_client_certificate(
    mtls_registry: SecuredRegistry, tmp_path: Path
) -> None:
    url = f"{mtls_registry.url}/v2/"
    assert _request(url, context=mtls_registry.ssl_context()).status == 200

    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _request(url, context=mtls_registry.ssl_context(client=False))

    stranger = CertificateAuthority(tmp_path / "other-ca").issue_client("stranger")
    assert mtls_registry.ca is not None
    context = ssl.create_default_context(cafile=mtls_registry.ca)
    context.load_cert_chain(stranger.certificate, stranger.key)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _request(url, context=context)


def test_skopeo_copies_into_mtls_registry_with_certs_d(
    mtls_registry: SecuredRegistry,
    skopeo: Skopeo,
    sample: tuple[Path, OciSampleImage],
    tmp_path: Path,
) -> None:
    layout, image = sample
    ref = f"docker://{mtls_registry.host}/variants/mtls:{TAG}"
    assert mtls_registry.cert_dir is not None
    ca_only = tmp_path / "ca-only"
    ca_only.mkdir()
    (ca_only / "ca.crt").write_bytes((mtls_registry.cert_dir / "ca.crt").read_bytes())

    code, _ = _copy(skopeo, layout, ref, "--dest-cert-dir", str(ca_only))
    assert code != 0

    code, stderr = _copy(skopeo, layout, ref, "--dest-cert-dir", str(mtls_registry.cert_dir))
    assert code == 0, stderr
    assert _inspect_digest(skopeo, ref, "--cert-dir", str(mtls_registry.cert_dir)) == (
        image.manifest_digest
    )


# Token auth


def _challenge_parameters(header: str) -> dict[str, str]:
    scheme, _, parameters = header.partition(" ")
    assert scheme == "Bearer"
    pairs = (item.split("=", 1) for item in parameters.split('",'))
    return {name: value.strip('"') for name, value in pairs}


def _get_token(server: TokenServer, *, auth: Mapping[str, str], **query: str) -> Answer:
    params = {"service": server.service, **query}
    return _request(f"{server.realm}?{urllib.parse.urlencode(params)}", headers=auth)


def _post_token(server: TokenServer, form: Mapping[str, str]) -> Answer:
    fields = {"service": server.service, "client_id": "hoist-tests", **form}
    return _request(server.realm, data=urllib.parse.urlencode(fields).encode())


def test_token_registry_challenges_with_the_realm(token_registry: SecuredRegistry) -> None:
    server = token_registry.token_server
    assert server is not None
    answer = _request(f"{token_registry.url}/v2/")
    assert answer.status == 401
    challenge = _challenge_parameters(answer.headers["WWW-Authenticate"])
    assert challenge["realm"] == server.realm
    assert challenge["service"] == server.service


def test_token_from_server_opens_registry_and_expired_one_does_not(
    token_registry: SecuredRegistry,
) -> None:
    server = token_registry.token_server
    assert server is not None
    basic = _basic(token_registry.username, token_registry.password)
    answer = _get_token(server, auth=basic, scope="repository:variants/token:push,pull")
    assert answer.status == 200
    body = answer.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == server.expires_in
    assert body["issued_at"].endswith("Z")
    assert _request(f"{token_registry.url}/v2/", headers=_bearer(body["token"])).status == 200

    expired = server.mint(token_registry.username, issued_at=time.time() - 3600)
    refused = _request(f"{token_registry.url}/v2/", headers=_bearer(expired))
    assert refused.status == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_token_signed_by_an_untrusted_key_is_refused(
    token_registry: SecuredRegistry, tmp_path: Path
) -> None:
    impostor = start_token_server(
        {"x": "y"}, ca=CertificateAuthority(tmp_path / "impostor-ca", "Impostor CA")
    )
    try:
        forged = impostor.mint(token_registry.username)
    finally:
        impostor.stop()
    assert _request(f"{token_registry.url}/v2/", headers=_bearer(forged)).status == 401


def test_token_grants_only_allowed_actions(token_registry: SecuredRegistry) -> None:
    server = token_registry.token_server
    assert server is not None
    server.grants = {token_registry.username: {"variants/readonly": ("pull",)}}
    basic = _basic(token_registry.username, token_registry.password)
    answer = _get_token(server, auth=basic, scope="repository:variants/readonly:push,pull")
    assert answer.status == 200
    assert server.issued[-1].granted == ("repository:variants/readonly:pull",)

    upload = _request(
        f"{token_registry.url}/v2/variants/readonly/blobs/uploads/",
        headers=_bearer(answer.json()["token"]),
        data=b"",
    )
    assert upload.status == 401
    assert 'error="insufficient_scope"' in upload.headers["WWW-Authenticate"]


def test_token_server_refuses_wrong_password_and_reject_all(
    token_registry: SecuredRegistry,
) -> None:
    server = token_registry.token_server
    assert server is not None
    scope = "repository:variants/token:push,pull"
    wrong = _get_token(server, auth=_basic(token_registry.username, "wrong"), scope=scope)
    assert wrong.status == 401
    assert wrong.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert b"wrong" not in wrong.body

    server.reject_all = True
    right = _basic(token_registry.username, token_registry.password)
    assert _get_token(server, auth=right, scope=scope).status == 401
    assert [request.status for request in server.requests] == [401, 401]
    assert server.issued == []


def test_token_server_oauth2_grants(token_registry: SecuredRegistry) -> None:
    server = token_registry.token_server
    assert server is not None
    basic = _basic(token_registry.username, token_registry.password)
    login = _get_token(server, auth=basic, account=token_registry.username, offline_token="true")
    refresh_token = login.json()["refresh_token"]

    refreshed = _post_token(
        server,
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "scope": "repository:variants/a:pull repository:variants/b:push",
        },
    )
    assert refreshed.status == 200
    assert server.issued[-1].granted == ("repository:variants/a:pull", "repository:variants/b:push")
    token = refreshed.json()["access_token"]
    assert _request(f"{token_registry.url}/v2/", headers=_bearer(token)).status == 200

    by_password = _post_token(
        server,
        {
            "grant_type": "password",
            "username": token_registry.username,
            "password": token_registry.password,
            "access_type": "offline",
        },
    )
    assert by_password.status == 200
    assert by_password.json()["refresh_token"] not in ("", refresh_token)

    bogus = _post_token(server, {"grant_type": "refresh_token", "refresh_token": "bogus"})
    assert bogus.status == 401


def test_short_lifetime_token_is_refused_by_the_registry_while_still_announced_valid(
    token_registry: SecuredRegistry,
) -> None:
    """``lifetime`` makes the registry refuse a token long before its ``expires_in``."""
    server = token_registry.token_server
    assert server is not None
    server.lifetime = 3
    basic = _basic(token_registry.username, token_registry.password)
    answer = _get_token(server, auth=basic)
    assert answer.json()["expires_in"] == server.expires_in > 60
    bearer = _bearer(answer.json()["token"])
    assert _request(f"{token_registry.url}/v2/", headers=bearer).status == 200

    deadline = time.monotonic() + 20
    status = 200
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        status = _request(f"{token_registry.url}/v2/", headers=bearer).status
    assert status == 401


def test_skopeo_copies_into_token_registry(
    token_registry: SecuredRegistry, skopeo: Skopeo, sample: tuple[Path, OciSampleImage]
) -> None:
    server = token_registry.token_server
    assert server is not None
    layout, image = sample
    repository = "variants/token"
    ref = f"docker://{token_registry.host}/{repository}:{TAG}"
    plain_http = "--dest-tls-verify=false"

    wrong = f"{token_registry.username}:wrong-password"
    code, stderr = _copy(skopeo, layout, ref, plain_http, "--dest-creds", wrong)
    assert code != 0
    assert "unauthorized" in stderr.lower()
    assert server.issued == []

    code, stderr = _copy(skopeo, layout, ref, plain_http, "--dest-creds", token_registry.creds)
    assert code == 0, stderr
    creds = ("--tls-verify=false", "--creds", token_registry.creds)
    assert _inspect_digest(skopeo, ref, *creds) == image.manifest_digest

    granted = [scope for request in server.issued for scope in request.granted]
    push_scopes = [s for s in granted if s.startswith(f"repository:{repository}:")]
    assert any("push" in s.rsplit(":", 1)[1].split(",") for s in push_scopes), granted
    assert all(request.basic_user == token_registry.username for request in server.issued)
    assert all(token_registry.password not in request.target for request in server.requests)


def test_token_server_over_tls(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "token-ca")
    server = start_token_server({"user": "secret"}, ca=ca, tls=True)
    try:
        assert server.realm.startswith("https://127.0.0.1:")
        with pytest.raises(urllib.error.URLError):
            _request(server.realm, context=ssl.create_default_context())
        trusting = ssl.create_default_context(cafile=ca.certificate)
        answer = _request(server.realm, headers=_basic("user", "secret"), context=trusting)
        assert answer.status == 200
        assert server.issued[-1].basic_user == "user"
    finally:
        server.stop()
