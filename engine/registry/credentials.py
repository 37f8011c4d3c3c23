"""Registry credentials: Docker's ``config.json`` (auths, helpers) read into ``AuthConfig`` values.

Lookup follows the Docker CLI: ``credHelpers[host]``, else ``credsStore``, else ``auths``. Keys
are matched the way Docker does, so a file written by ``docker login`` (or a legacy one with
``https://host/v1/`` keys) works unchanged; Docker Hub lives under ``https://index.docker.io/v1/``.
Writes replace the file atomically with mode 0600 and keep every key Hoist does not know.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from engine import docker_hub
from engine.errors import ConfigError
from engine.registry.auth_config import AuthConfig
from engine.registry.helpers import TOKEN_USERNAME, CredentialHelper, HelperCredentials

T = TypeVar("T")

CONFIG_FILE = "config.json"
_SECRET_FIELDS = ("auth", "username", "password", "identitytoken", "registrytoken")


# -- where the file is, and which key a registry has in it ----------------------------------------


def config_dir(explicit: Path | None = None) -> Path:
    """``--config DIR``, else ``$DOCKER_CONFIG``, else ``~/.docker``, as the Docker CLI picks."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get("DOCKER_CONFIG")
    if from_env:
        return Path(from_env)
    return Path.home() / ".docker"


def convert_to_hostname(address: str) -> str:
    """``https://host:5000/v1/`` → ``host:5000``: a key's host, without scheme or path."""
    _, separator, rest = address.partition("://")
    host = rest if separator else address
    return host.split("/", 1)[0]


def server_key(domain: str) -> str:
    """The ``config.json`` key of a registry: Docker Hub's historical index URL, else the host."""
    if domain.lower() in docker_hub.ALIASES:
        return docker_hub.CONFIG_KEY
    return domain


def _canonical_key(address: str) -> str:
    return server_key(convert_to_hostname(address))


def _find_key(keys: Mapping[str, object], address: str) -> str | None:
    """The key for ``address``: as given, then its canonical form, then any key that means it."""
    canonical = _canonical_key(address)
    for exact in (address, canonical):
        if exact in keys:
            return exact
    wanted = canonical.lower()
    return next((key for key in keys if _canonical_key(key).lower() == wanted), None)


# -- the "auths" section -------------------------------------------------------------------------


def encode_auth(username: str, password: str) -> str:
    """The ``auth`` field: base64 of ``user:pass`` (empty when both are)."""
    if not username and not password:
        return ""
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def decode_auth(auth: str) -> tuple[str, str]:
    """``(username, password)`` from an ``auth`` field; the password may itself contain ``:``."""
    try:
        decoded = base64.b64decode(auth, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not base64 of UTF-8 text") from None
    username, separator, password = decoded.partition(":")
    if not separator or not username:
        raise ValueError("not of the form user:password")
    # Some old clients padded the password with NULs; Docker trims them too.
    return username, password.strip("\x00")


def _string_field(entry: Mapping[str, Any], name: str) -> str:
    value = entry.get(name, "")
    if not isinstance(value, str):
        raise ValueError(f"{name!r} is not a string")
    return value


def _auth_from_entry(key: str, entry: Mapping[str, Any]) -> AuthConfig:
    auth = _string_field(entry, "auth")
    if auth:
        username, password = decode_auth(auth)
    else:
        username, password = _string_field(entry, "username"), _string_field(entry, "password")
    return AuthConfig(
        username=username,
        password=password,
        identity_token=_string_field(entry, "identitytoken"),
        registry_token=_string_field(entry, "registrytoken"),
        server_address=key,
    )


def _entry_for(auth: AuthConfig, previous: Mapping[str, Any]) -> dict[str, Any]:
    """The ``auths`` entry for ``auth``: the secret encoded, never the password in clear."""
    entry = {name: value for name, value in previous.items() if name not in _SECRET_FIELDS}
    encoded = encode_auth(auth.username, auth.password)
    if encoded:
        entry["auth"] = encoded
    if auth.identity_token:
        entry["identitytoken"] = auth.identity_token
    if auth.registry_token:
        entry["registrytoken"] = auth.registry_token
    return entry


# -- the file on disk (called in a worker thread: these block) -----------------------------------


def _malformed(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path}: malformed configuration file: {what}")


def _parse(path: Path, data: bytes) -> dict[str, Any]:
    if not data.strip():
        return {}  # Docker treats an empty file as an empty configuration.
    try:
        document = json.loads(data)
    except UnicodeDecodeError:
        raise _malformed(path, "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        # e.msg and the position only: the document itself may hold secrets.
        where = f"line {e.lineno} column {e.colno}"
        raise _malformed(path, f"invalid JSON ({e.msg} at {where})") from None
    if not isinstance(document, dict):
        raise _malformed(path, "the top level is not a JSON object")
    return document


def _read_document(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    return _parse(path, data)


def _write_document(path: Path, document: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically (temp file + rename in the same directory), mode 0600."""
    target = Path(os.path.realpath(path))  # write through a symlinked config.json, as Docker does
    data = json.dumps(document, indent="\t").encode()
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _replace(target, data)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write: {e.strerror or e}") from None


def _replace(target: Path, data: bytes) -> None:
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    # Created 0600 from the start: the secrets are never readable by others, not even briefly.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# -- the configuration ---------------------------------------------------------------------------


def _section(path: Path, document: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed(path, f"{name!r} is not a JSON object")
    return value


def _validate(path: Path, document: Mapping[str, Any]) -> dict[str, AuthConfig]:
    """Check the parts Hoist reads, and decode ``auths``; errors name keys, never values."""
    helpers = _section(path, document, "credHelpers")
    if not all(isinstance(name, str) for name in helpers.values()):
        raise _malformed(path, "a 'credHelpers' value is not a string")
    if not isinstance(document.get("credsStore", ""), str):
        raise _malformed(path, "'credsStore' is not a string")
    auths: dict[str, AuthConfig] = {}
    for key, entry in _section(path, document, "auths").items():
        if not isinstance(entry, dict):
            raise _malformed(path, f"the 'auths' entry for {key} is not a JSON object")
        try:
            auths[key] = _auth_from_entry(key, entry)
        except ValueError as e:
            raise _malformed(path, f"the 'auths' entry for {key}: {e}") from None
    return auths


#: An edit of the ``auths`` section in place; True when it changed something.
AuthsChange = Callable[[dict[str, Any]], bool]


class DockerConfig:
    """Docker's ``config.json``: where credentials for each registry come from and go to."""

    def __init__(self, path: Path, document: dict[str, Any]) -> None:
        self.path = path
        self._document = document
        self._auths = _validate(path, document)
        # Held in the worker thread that reads, changes and replaces the file.
        self._write_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DockerConfig({str(self.path)!r})"

    @classmethod
    async def load(cls, directory: Path | None = None) -> DockerConfig:
        """Read ``config.json`` from ``directory`` (see ``config_dir``); a missing file is empty."""
        return await _in_thread(partial(cls.read, directory))

    @classmethod
    def read(cls, directory: Path | None = None) -> DockerConfig:
        """``load`` for a caller with no event loop."""
        path = config_dir(directory) / CONFIG_FILE
        return cls(path, _read_document(path))

    @property
    def creds_store(self) -> str:
        return str(self._document.get("credsStore", ""))

    @property
    def cred_helpers(self) -> Mapping[str, str]:
        return dict(self._document.get("credHelpers") or {})

    def helper_for(self, host: str) -> CredentialHelper | None:
        """``credHelpers[host]``, else ``credsStore``; an empty name there means "use the file"."""
        helpers = self.cred_helpers
        key = _find_key(helpers, host)
        name = helpers[key] if key is not None else self.creds_store
        return CredentialHelper(name) if name else None

    async def get(self, host: str) -> AuthConfig:
        """The credentials for ``host``; anonymous when none are stored (not an error)."""
        key = _canonical_key(host)
        helper = self.helper_for(host)
        if helper is not None:
            return _from_helper(key, await helper.get(key))
        return self._from_file(host, key)

    def get_blocking(self, host: str) -> AuthConfig:
        """``get`` for a caller with no event loop (``hoist push`` through ``hoist serve``)."""
        key = _canonical_key(host)
        helper = self.helper_for(host)
        if helper is not None:
            return _from_helper(key, helper.get_blocking(key))
        return self._from_file(host, key)

    def _from_file(self, host: str, key: str) -> AuthConfig:
        found = _find_key(self._auths, host)
        return self._auths[found] if found is not None else AuthConfig(server_address=key)

    async def store(self, host: str, auth: AuthConfig) -> bool:
        """Save ``auth`` for ``host``; True when it went into the file unencrypted."""
        key = _canonical_key(host)
        helper = self.helper_for(host)
        if helper is not None:
            await helper.store(_to_helper(key, auth))
            # Like Docker: the helper holds the secret; the file keeps a bare entry, and loses
            # any clear-text secret an earlier login left there.
            await self._update_auths(lambda auths: _put(auths, key, AuthConfig()))
            return False
        await self._update_auths(lambda auths: _put(auths, key, auth))
        return bool(auth.password or auth.identity_token or auth.registry_token)

    async def erase(self, host: str) -> bool:
        """Forget the credentials for ``host``; False when there were none ("not logged in")."""
        key = _canonical_key(host)
        helper = self.helper_for(host)
        erased = await helper.erase(key) if helper is not None else False
        removed = await self._update_auths(lambda auths: _remove_matching(auths, host))
        return erased or removed

    async def _update_auths(self, change: AuthsChange) -> bool:
        """Apply ``change`` to the file as it is on disk now, so that edits made since ``load``
        by other programs survive; write only when something changed."""
        return await _in_thread(partial(self._update_file, change))

    def _update_file(self, change: AuthsChange) -> bool:
        with self._write_lock:
            return self._update_file_locked(change)

    def _update_file_locked(self, change: AuthsChange) -> bool:
        document = _read_document(self.path)
        auths = dict(_section(self.path, document, "auths"))
        if not change(auths):
            return False
        document["auths"] = auths
        _write_document(self.path, document)
        self._document = document
        self._auths = _validate(self.path, document)
        return True


async def _in_thread(call: Callable[[], T]) -> T:
    # anyio is imported here, not at the top: ``hoist push`` through ``hoist serve`` reads
    # config.json with no event loop, and anyio's import is a sixth of that command's time.
    import anyio

    return await anyio.to_thread.run_sync(call)


def _put(auths: dict[str, Any], key: str, auth: AuthConfig) -> bool:
    previous = auths.get(key)
    entry = _entry_for(auth, previous if isinstance(previous, dict) else {})
    if previous == entry:
        return False
    auths[key] = entry
    return True


def _remove_matching(auths: dict[str, Any], host: str) -> bool:
    """Drop every key that means ``host`` (``host``, ``https://host``, ``http://host/v1/`` …),
    as ``docker logout`` tries each legacy form."""
    wanted = _canonical_key(host).lower()
    doomed = [key for key in auths if _canonical_key(key).lower() == wanted]
    for key in doomed:
        del auths[key]
    return bool(doomed)


def _from_helper(key: str, answer: HelperCredentials | None) -> AuthConfig:
    if answer is None:
        return AuthConfig(server_address=key)
    if answer.is_identity_token:
        return AuthConfig(identity_token=answer.secret, server_address=key)
    return AuthConfig(username=answer.username, password=answer.secret, server_address=key)


def _to_helper(key: str, auth: AuthConfig) -> HelperCredentials:
    if auth.identity_token:
        return HelperCredentials(key, TOKEN_USERNAME, auth.identity_token)
    return HelperCredentials(key, auth.username, auth.password)
