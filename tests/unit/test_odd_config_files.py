"""Whatever ``config.json`` and ``daemon.json`` hold, Hoist reads them or refuses them with a
HoistError (the command's one error line), and a refusal never shows a secret the file holds.

Hypothesis writes files whose values are anything JSON allows, secrets among them, and asks for
credentials as ``hoist push`` does. No credential helper runs: ``PATH`` points at an empty
directory, so a helper the file names is a missing one. ``HOIST_FUZZ_EXAMPLES=N`` runs N random
examples (``tests/support/fuzzing.py``). Credentials read are shown (``repr``) without their
secrets too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from engine.errors import CredentialHelperError, HoistError
from engine.registry.credentials import DockerConfig
from engine.settings import read_settings
from tests.support.fuzzing import VALUES, fuzz_settings

SECRET = "hunter2-secret"
#: The forms a secret takes in config.json: clear, and inside ``auth``'s base64.
SECRET_FORMS = (SECRET, base64.b64encode(f"user:{SECRET}".encode()).decode())
HOSTS = ("127.0.0.1:5000", "https://index.docker.io/v1/", "docker.io", "[::1]:5000")

SECRET_VALUES = st.sampled_from([SECRET, SECRET_FORMS[1], f"{SECRET}:x"]) | VALUES
#: The fields of an ``auths`` entry that hold secrets (a user name is none: Docker shows it).
SECRET_FIELDS = ("auth", "password", "identitytoken", "registrytoken")
ENTRY = st.fixed_dictionaries(
    {},
    optional={"username": VALUES, **{name: SECRET_VALUES for name in SECRET_FIELDS}},
)
#: Entries that mostly read: the secret where a credential goes, beside plain words.
READABLE_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "username": st.sampled_from(["user", ""]),
        **{name: st.sampled_from([SECRET, SECRET_FORMS[1], ""]) for name in SECRET_FIELDS},
    },
)
CONFIG = st.one_of(
    st.fixed_dictionaries(
        {"auths": st.dictionaries(st.sampled_from(HOSTS), READABLE_ENTRY, min_size=1)}
    ).map(lambda document: json.dumps(document).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "auths": st.dictionaries(st.sampled_from(HOSTS) | st.text(max_size=8), ENTRY) | VALUES,
            "credsStore": VALUES,
            "credHelpers": st.dictionaries(st.sampled_from(HOSTS), VALUES) | VALUES,
        },
    ).map(lambda document: json.dumps(document).encode()),
    VALUES.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=60),
)


@contextlib.contextmanager
def _no_helpers() -> Iterator[None]:
    """Every credential helper is a missing one while inside."""
    with tempfile.TemporaryDirectory() as empty, mock.patch.dict(os.environ, {"PATH": empty}):
        yield


def _no_secret_in(refusal: HoistError) -> None:
    text = str(refusal)
    assert not any(form in text for form in SECRET_FORMS), text


@fuzz_settings(300)
@given(CONFIG)
def test_any_config_json(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory, _no_helpers():
        (Path(directory) / "config.json").write_bytes(data)
        try:
            config = DockerConfig.read(Path(directory))
            found = [config.get_blocking(host) for host in HOSTS]
        except HoistError as refusal:
            event(f"refused: {type(refusal).__name__}")
            _no_secret_in(refusal)
        else:
            event(f"credentials found: {sum(not auth.anonymous for auth in found)}")
            for auth in found:  # what a log line of the credentials shows
                assert not any(form in repr(auth) for form in SECRET_FORMS), repr(auth)


@fuzz_settings(200)
@given(st.one_of(VALUES.map(json.dumps), st.text(max_size=40)))
def test_any_daemon_json(text: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "daemon.json").write_text(text)
        try:
            settings = read_settings(Path(root))
        except HoistError:
            return
        assert settings.max_concurrent_uploads >= 1


def test_a_helper_name_with_a_nul_is_one_error(tmp_path: Path) -> None:
    """Found by the search above: ``"credsStore": "\\u0000"`` reached ``exec`` (a ValueError)."""
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "a\0b"}))
    config = DockerConfig.read(tmp_path)
    with pytest.raises(CredentialHelperError, match="invalid credential helper name"):
        config.get_blocking("127.0.0.1:5000")
