"""Credentials from Docker's config.json and real credential-helper programs on PATH."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import docker_hub
from engine.errors import ConfigError, CredentialHelperError, HoistError
from engine.registry.auth_config import AuthConfig
from engine.registry.credentials import (
    DockerConfig,
    config_dir,
    convert_to_hostname,
    decode_auth,
    encode_auth,
    server_key,
)

PASSWORD = "s3cr:et-pa:ss"  # contains ':' on purpose
TOKEN = "refresh-token-7f3a9c"

# A credential helper as the protocol describes it: a program of its own, state in a JSON file
# named after the program, every call logged (argv and environment) so tests can look for leaks.
HELPER_SCRIPT = """\
#!{python}
import json, os, sys

name = os.path.basename(sys.argv[0])
state_path = os.path.join(os.environ["HELPER_STATE_DIR"], name + ".json")
action = sys.argv[1]
request = sys.stdin.read()
with open(os.path.join(os.environ["HELPER_STATE_DIR"], "calls.log"), "a") as log:
    log.write(json.dumps({{"argv": sys.argv, "env": dict(os.environ)}}) + "\\n")
if os.environ.get("HELPER_FAIL"):
    print("helper exploded on input " + request)
    print("stderr copy " + request, file=sys.stderr)
    sys.exit(3)
state = json.load(open(state_path)) if os.path.exists(state_path) else {{}}
if action == "get":
    if request not in state:
        print("credentials not found in native keychain")
        sys.exit(1)
    if os.environ.get("HELPER_GARBLE"):
        print("garbled " + state[request]["Secret"])
        sys.exit(0)
    print(json.dumps(dict(state[request], ServerURL=request)))
elif action == "store":
    creds = json.loads(request)
    state[creds["ServerURL"]] = {{"Username": creds["Username"], "Secret": creds["Secret"]}}
elif action == "erase":
    if request not in state:
        print("credentials not found in native keychain")
        sys.exit(1)
    del state[request]
json.dump(state, open(state_path, "w"))
"""


@pytest.fixture
def helper_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on PATH holding docker-credential-alpha and docker-credential-beta."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("alpha", "beta"):
        script = bin_dir / f"docker-credential-{name}"
        script.write_text(HELPER_SCRIPT.format(python=sys.executable))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HELPER_STATE_DIR", str(bin_dir))
    return bin_dir


def helper_state(helper_dir: Path, name: str) -> dict[str, Any]:
    path = helper_dir / f"docker-credential-{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def seed_helper(helper_dir: Path, name: str, server_url: str, username: str, secret: str) -> None:
    state = helper_state(helper_dir, name)
    state[server_url] = {"Username": username, "Secret": secret}
    (helper_dir / f"docker-credential-{name}.json").write_text(json.dumps(state))


def write_config(directory: Path, document: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(document))
    return path


def basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


# -- AuthConfig -----------------------------------------------------------------------------------


def test_auth_config_repr_and_str_hide_every_secret() -> None:
    auth = AuthConfig("joe", PASSWORD, TOKEN, "bearer-xyz", "reg.example:5000")
    for text in (repr(auth), str(auth), f"{auth}", repr([auth])):
        assert PASSWORD not in text
        assert TOKEN not in text
        assert "bearer-xyz" not in text
        assert "joe" in text
        assert "reg.example:5000" in text
        assert text.count("***") == 3


def test_auth_config_anonymous_only_without_any_credential() -> None:
    assert AuthConfig().anonymous
    assert AuthConfig(server_address="x").anonymous
    assert not AuthConfig(username="joe").anonymous
    assert not AuthConfig(identity_token=TOKEN).anonymous
    assert not AuthConfig(registry_token="t").anonymous
    assert "***" not in repr(AuthConfig(username="joe"))


# -- where, and which key ------------------------------------------------------------------------


def test_config_dir_prefers_explicit_then_env_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "env"))
    assert config_dir(tmp_path / "flag") == tmp_path / "flag"
    assert config_dir() == tmp_path / "env"
    monkeypatch.delenv("DOCKER_CONFIG")
    assert config_dir() == tmp_path / "home" / ".docker"


@pytest.mark.parametrize(
    ("domain", "key"),
    [
        ("docker.io", docker_hub.CONFIG_KEY),
        ("index.docker.io", docker_hub.CONFIG_KEY),
        ("registry-1.docker.io", docker_hub.CONFIG_KEY),
        ("localhost:5000", "localhost:5000"),
        ("ghcr.io", "ghcr.io"),
    ],
)
def test_server_key(domain: str, key: str) -> None:
    assert server_key(domain) == key


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("https://reg.example:5000/v1/", "reg.example:5000"),
        ("http://reg.example/v2/", "reg.example"),
        ("reg.example:5000", "reg.example:5000"),
        ("reg.example/v1/", "reg.example"),
        ("https://[::1]:5000/v2/", "[::1]:5000"),
    ],
)
def test_convert_to_hostname(address: str, host: str) -> None:
    assert convert_to_hostname(address) == host


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stored_key", "lookup"),
    [
        ("reg.example:5000", "reg.example:5000"),
        ("https://reg.example:5000", "reg.example:5000"),
        ("http://reg.example:5000/v1/", "reg.example:5000"),
        ("https://reg.example:5000/v2/", "reg.example:5000"),
        ("reg.example:5000", "https://reg.example:5000/v2/"),
        ("REG.example:5000", "reg.example:5000"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("https://index.docker.io/v1/", "registry-1.docker.io"),
        ("index.docker.io", "docker.io"),
        ("https://index.docker.io/v2/", "docker.io"),
    ],
)
async def test_auths_key_matching(tmp_path: Path, stored_key: str, lookup: str) -> None:
    write_config(tmp_path, {"auths": {stored_key: {"auth": basic("joe", PASSWORD)}}})
    config = await DockerConfig.load(tmp_path)
    auth = await config.get(lookup)
    assert (auth.username, auth.password) == ("joe", PASSWORD)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stored_key", "lookup"),
    [
        ("reg.example:5000", "reg.example"),
        ("reg.example", "reg.example:5000"),
        ("https://index.docker.io/v1/", "ghcr.io"),
        ("other.example", "reg.example"),
    ],
)
async def test_auths_key_mismatch_is_anonymous(
    tmp_path: Path, stored_key: str, lookup: str
) -> None:
    write_config(tmp_path, {"auths": {stored_key: {"auth": basic("joe", PASSWORD)}}})
    config = await DockerConfig.load(tmp_path)
    assert (await config.get(lookup)).anonymous


@pytest.mark.anyio
async def test_exact_key_wins_over_a_legacy_form(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "auths": {
                "https://reg.example/v1/": {"auth": basic("legacy", "old")},
                "reg.example": {"auth": basic("current", "new")},
            }
        },
    )
    auth = await (await DockerConfig.load(tmp_path)).get("reg.example")
    assert (auth.username, auth.password) == ("current", "new")


# -- the auths section ---------------------------------------------------------------------------


def test_decode_auth_keeps_colons_in_the_password_and_trims_nuls() -> None:
    assert decode_auth(basic("joe", PASSWORD)) == ("joe", PASSWORD)
    assert decode_auth(basic("joe", "pw\x00\x00")) == ("joe", "pw")
    assert decode_auth(encode_auth("joe", PASSWORD)) == ("joe", PASSWORD)
    assert encode_auth("", "") == ""


@pytest.mark.parametrize("auth", ["not base64!", basic("no-colon", "")[:-4], basic("", "pw")])
def test_decode_auth_rejects_malformed_values(auth: str) -> None:
    with pytest.raises(ValueError):
        decode_auth(auth)


@pytest.mark.anyio
async def test_identity_and_registry_tokens_from_auths(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        {
            "auths": {
                "a.example": {"identitytoken": TOKEN},
                "b.example": {"registrytoken": "bearer-xyz"},
                "c.example": {"auth": basic("joe", PASSWORD), "identitytoken": TOKEN},
            }
        },
    )
    config = await DockerConfig.load(tmp_path)
    a, b, c = [await config.get(host) for host in ("a.example", "b.example", "c.example")]
    assert (a.username, a.password, a.identity_token) == ("", "", TOKEN)
    assert b.registry_token == "bearer-xyz" and not b.anonymous
    assert (c.username, c.password, c.identity_token) == ("joe", PASSWORD, TOKEN)
    assert c.server_address == "c.example"


@pytest.mark.anyio
async def test_missing_file_is_an_empty_configuration(tmp_path: Path) -> None:
    config = await DockerConfig.load(tmp_path / "nowhere")
    auth = await config.get("docker.io")
    assert auth.anonymous
    assert auth.server_address == docker_hub.CONFIG_KEY


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [
        '{"auths": {"reg.example": {"auth": "' + basic("joe", PASSWORD) + '"}',  # truncated
        f'{{"auths": {{"reg.example": {{"password": "{PASSWORD}",}}}}}}',  # trailing comma
        f'["{PASSWORD}"]',
        f'{{"auths": "{PASSWORD}"}}',
        f'{{"auths": {{"reg.example": {{"auth": "{PASSWORD}"}}}}}}',  # not base64
        f'{{"auths": {{"reg.example": {{"identitytoken": ["{PASSWORD}"]}}}}}}',
        f'{{"credsStore": ["{PASSWORD}"]}}',
    ],
)
async def test_malformed_config_names_the_file_and_echoes_nothing(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        await DockerConfig.load(tmp_path)
    message = str(caught.value)
    assert str(path) in message
    assert "malformed" in message
    assert PASSWORD not in message
    assert basic("joe", PASSWORD) not in message
    # No chained exception carrying the document (JSONDecodeError.doc holds all of it).
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert isinstance(caught.value, HoistError)


@pytest.mark.anyio
async def test_empty_file_is_an_empty_configuration(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("  \n")
    assert (await (await DockerConfig.load(tmp_path)).get("reg.example")).anonymous


# -- storing in the file -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_store_in_file_is_atomic_0600_and_keeps_other_keys(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "auths": {"other.example": {"auth": basic("ann", "x"), "email": "a@b.c"}},
            "psFormat": "table {{.ID}}",
            "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
        },
    )
    path.chmod(0o644)
    config = await DockerConfig.load(tmp_path)
    unencrypted = await config.store("reg.example:5000", AuthConfig("joe", PASSWORD))

    assert unencrypted is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["config.json"]  # no temp left over
    document = json.loads(path.read_text())
    assert document["psFormat"] == "table {{.ID}}"
    assert document["proxies"] == {"default": {"httpProxy": "http://proxy:3128"}}
    assert document["auths"]["other.example"] == {"auth": basic("ann", "x"), "email": "a@b.c"}
    assert document["auths"]["reg.example:5000"] == {"auth": basic("joe", PASSWORD)}
    assert PASSWORD not in path.read_text()  # encoded, never in clear

    again = await (await DockerConfig.load(tmp_path)).get("reg.example:5000")
    assert (again.username, again.password) == ("joe", PASSWORD)


@pytest.mark.anyio
async def test_store_creates_the_directory_and_uses_docker_hub_key(tmp_path: Path) -> None:
    directory = tmp_path / "fresh" / ".docker"
    config = await DockerConfig.load(directory)
    await config.store("docker.io", AuthConfig(identity_token=TOKEN))
    document = json.loads((directory / "config.json").read_text())
    assert document == {"auths": {docker_hub.CONFIG_KEY: {"identitytoken": TOKEN}}}
    assert stat.S_IMODE((directory / "config.json").stat().st_mode) == 0o600
    assert (await config.get("index.docker.io")).identity_token == TOKEN


@pytest.mark.anyio
async def test_store_keeps_changes_made_by_others_since_load(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {}})
    config = await DockerConfig.load(tmp_path)
    write_config(tmp_path, {"auths": {"late.example": {"auth": basic("l", "m")}}, "x": 1})
    await config.store("reg.example", AuthConfig("joe", PASSWORD))
    document = json.loads(path.read_text())
    assert set(document["auths"]) == {"late.example", "reg.example"}
    assert document["x"] == 1


@pytest.mark.anyio
async def test_store_writes_through_a_symlinked_config(tmp_path: Path) -> None:
    real = write_config(tmp_path / "dotfiles", {"auths": {}})
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").symlink_to(real)
    config = await DockerConfig.load(tmp_path / "docker")
    await config.store("reg.example", AuthConfig("joe", PASSWORD))
    assert (tmp_path / "docker" / "config.json").is_symlink()
    assert "reg.example" in json.loads(real.read_text())["auths"]


@pytest.mark.anyio
async def test_erase_from_file_removes_every_form_of_the_key(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "auths": {
                "reg.example": {"auth": basic("a", "b")},
                "https://reg.example/v1/": {"auth": basic("c", "d")},
                "keep.example": {"auth": basic("e", "f")},
            }
        },
    )
    config = await DockerConfig.load(tmp_path)
    assert await config.erase("reg.example") is True
    assert set(json.loads(path.read_text())["auths"]) == {"keep.example"}
    assert (await config.get("reg.example")).anonymous
    before = path.stat().st_mtime_ns
    assert await config.erase("reg.example") is False  # not logged in: no error, no write
    assert path.stat().st_mtime_ns == before


# -- credential helpers --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_helper_get_store_erase_round_trip(tmp_path: Path, helper_dir: Path) -> None:
    path = write_config(tmp_path / "cfg", {"credsStore": "alpha", "auths": {}})
    config = await DockerConfig.load(tmp_path / "cfg")

    assert (await config.get("reg.example")).anonymous  # "not found" is not an error
    assert await config.store("reg.example", AuthConfig("joe", PASSWORD)) is False
    assert helper_state(helper_dir, "alpha") == {
        "reg.example": {"Username": "joe", "Secret": PASSWORD}
    }
    assert PASSWORD not in path.read_text()
    assert json.loads(path.read_text())["auths"] == {"reg.example": {}}  # Docker's bare entry

    auth = await config.get("https://reg.example/v2/")
    assert (auth.username, auth.password, auth.server_address) == ("joe", PASSWORD, "reg.example")

    assert await config.erase("reg.example") is True
    assert helper_state(helper_dir, "alpha") == {}
    assert json.loads(path.read_text())["auths"] == {}
    assert await config.erase("reg.example") is False


@pytest.mark.anyio
async def test_helper_store_replaces_a_clear_text_entry(tmp_path: Path, helper_dir: Path) -> None:
    path = write_config(
        tmp_path, {"credsStore": "alpha", "auths": {"reg.example": {"auth": basic("o", "old")}}}
    )
    config = await DockerConfig.load(tmp_path)
    await config.store("reg.example", AuthConfig("joe", PASSWORD))
    assert json.loads(path.read_text())["auths"] == {"reg.example": {}}


@pytest.mark.anyio
async def test_helper_token_username_means_identity_token(tmp_path: Path, helper_dir: Path) -> None:
    write_config(tmp_path, {"credsStore": "alpha"})
    config = await DockerConfig.load(tmp_path)
    await config.store("docker.io", AuthConfig(username="joe", identity_token=TOKEN))
    assert helper_state(helper_dir, "alpha") == {
        docker_hub.CONFIG_KEY: {"Username": "<token>", "Secret": TOKEN}
    }
    auth = await config.get("docker.io")
    assert (auth.username, auth.password, auth.identity_token) == ("", "", TOKEN)


@pytest.mark.anyio
async def test_cred_helpers_beat_creds_store_beats_auths(tmp_path: Path, helper_dir: Path) -> None:
    seed_helper(helper_dir, "alpha", "special.example", "alpha-user", "alpha-secret")
    seed_helper(helper_dir, "beta", "special.example", "beta-user", "beta-secret")
    seed_helper(helper_dir, "beta", "plain.example", "beta-user", "beta-secret")
    write_config(
        tmp_path,
        {
            "credHelpers": {"special.example": "alpha", "file.example": ""},
            "credsStore": "beta",
            "auths": {
                "special.example": {"auth": basic("file-user", "file-pw")},
                "plain.example": {"auth": basic("file-user", "file-pw")},
                "file.example": {"auth": basic("file-user", "file-pw")},
            },
        },
    )
    config = await DockerConfig.load(tmp_path)
    assert (await config.get("special.example")).username == "alpha-user"
    assert (await config.get("plain.example")).username == "beta-user"
    # An empty credHelpers entry opts that host out of credsStore, as in Docker.
    assert (await config.get("file.example")).username == "file-user"


@pytest.mark.anyio
async def test_secrets_never_reach_a_helpers_argv_or_environment(
    tmp_path: Path, helper_dir: Path
) -> None:
    write_config(tmp_path, {"credsStore": "alpha"})
    config = await DockerConfig.load(tmp_path)
    await config.store("reg.example", AuthConfig("joe", PASSWORD))
    await config.get("reg.example")
    await config.erase("reg.example")
    calls = [json.loads(line) for line in (helper_dir / "calls.log").read_text().splitlines()]
    assert [call["argv"][1] for call in calls] == ["store", "get", "erase"]
    for call in calls:
        assert len(call["argv"]) == 2
        assert PASSWORD not in json.dumps(call)


@pytest.mark.anyio
async def test_missing_helper_is_a_clear_error(tmp_path: Path, helper_dir: Path) -> None:
    write_config(tmp_path, {"credHelpers": {"reg.example": "nosuch"}})
    config = await DockerConfig.load(tmp_path)
    with pytest.raises(CredentialHelperError, match="docker-credential-nosuch") as caught:
        await config.get("reg.example")
    assert isinstance(caught.value, HoistError)
    with pytest.raises(CredentialHelperError, match="not found on PATH"):
        await config.store("reg.example", AuthConfig("joe", PASSWORD))


@pytest.mark.anyio
async def test_failing_helper_error_never_quotes_the_secret(
    tmp_path: Path, helper_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, {"credsStore": "alpha"})
    config = await DockerConfig.load(tmp_path)
    monkeypatch.setenv("HELPER_FAIL", "1")  # the helper echoes its stdin on both streams
    with pytest.raises(CredentialHelperError) as caught:
        await config.store("reg.example", AuthConfig("joe", PASSWORD))
    message = str(caught.value)
    assert PASSWORD not in message
    assert "docker-credential-alpha" in message
    assert "exit status 3" in message
    assert "stderr copy" not in message  # stderr is never quoted
    with pytest.raises(CredentialHelperError, match=r"failed to get credentials for reg\.example"):
        await config.get("reg.example")


@pytest.mark.anyio
async def test_garbled_helper_answer_is_not_echoed(
    tmp_path: Path, helper_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_helper(helper_dir, "alpha", "reg.example", "joe", PASSWORD)
    write_config(tmp_path, {"credsStore": "alpha"})
    config = await DockerConfig.load(tmp_path)
    monkeypatch.setenv("HELPER_GARBLE", "1")  # prints the secret, but not as JSON
    with pytest.raises(CredentialHelperError, match="not a JSON object") as caught:
        await config.get("reg.example")
    assert PASSWORD not in str(caught.value)


def test_the_blocking_lookup_gives_what_get_gives(tmp_path: Path, helper_dir: Path) -> None:
    """``hoist push`` through ``hoist serve`` reads credentials with no event loop."""
    seed_helper(helper_dir, "alpha", "special.example", "alpha-user", "alpha-secret")
    seed_helper(helper_dir, "beta", "plain.example", "beta-user", "beta-secret")
    write_config(
        tmp_path,
        {
            "credHelpers": {"special.example": "alpha", "file.example": "", "gone.example": "x"},
            "credsStore": "beta",
            "auths": {"file.example": {"auth": basic("file-user", "file-pw")}},
        },
    )
    config = DockerConfig.read(tmp_path)
    for host in ("special.example", "plain.example", "file.example", "nobody.example"):
        assert config.get_blocking(host) == anyio.run(config.get, host)
    assert config.get_blocking("special.example").password == "alpha-secret"
    with pytest.raises(CredentialHelperError, match="docker-credential-x not found on PATH"):
        config.get_blocking("gone.example")
