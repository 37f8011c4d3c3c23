"""The credential-helper protocol: ``docker-credential-NAME get|store|erase`` as child processes.

A helper reads its request on stdin (the server URL for ``get`` and ``erase``; a JSON object
``{"ServerURL", "Username", "Secret"}`` for ``store``) and answers ``get`` with that JSON on
stdout. Secrets travel on stdin and stdout only: never in argv or the environment, where other
users of the machine could read them. Helpers report errors on stdout, and the one error with a
meaning of its own is "credentials not found in native keychain".
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from engine.errors import CredentialHelperError
from engine.value import Value

if TYPE_CHECKING:
    import subprocess

HELPER_PREFIX = "docker-credential-"

#: The username a helper stores with an identity token (an OAuth2 refresh token) as the secret.
TOKEN_USERNAME = "<token>"

NOT_FOUND_MESSAGE = "credentials not found in native keychain"

#: How much of a helper's error output an exception may quote.
_QUOTE_LIMIT = 200


class HelperCredentials(Value):
    """What a helper stores and returns for one server URL."""

    __slots__ = ("secret", "server_url", "username")
    server_url: str
    username: str
    secret: str

    def __init__(self, server_url: str, username: str, secret: str) -> None:
        super().__init__(server_url, username, secret)

    def __repr__(self) -> str:
        return f"HelperCredentials(server_url={self.server_url!r}, username={self.username!r})"

    @property
    def is_identity_token(self) -> bool:
        return self.username == TOKEN_USERNAME


def _is_not_found(output: bytes) -> bool:
    return output.decode(errors="replace").strip() == NOT_FOUND_MESSAGE


def _quote(output: bytes, secret: str = "") -> str:
    """A short, single-line excerpt of a helper's error output, the secret masked if known."""
    text = output.decode(errors="replace").strip()
    if secret:
        text = text.replace(secret, "***")
    first_line = text.splitlines()[0] if text else ""
    if len(first_line) > _QUOTE_LIMIT:
        first_line = first_line[:_QUOTE_LIMIT] + "…"
    return f": {first_line}" if first_line else ""


class CredentialHelper:
    """One helper program, ``docker-credential-NAME``, found on ``PATH``."""

    def __init__(self, name: str) -> None:
        # Part of a program's file name, which can hold neither a slash nor a NUL.
        if not name or "/" in name or "\0" in name:
            raise CredentialHelperError(f"invalid credential helper name {name!r}")
        self.name = name
        self.program = HELPER_PREFIX + name

    def __repr__(self) -> str:
        return f"CredentialHelper({self.name!r})"

    async def get(self, server_url: str) -> HelperCredentials | None:
        """The stored credentials for ``server_url``, or None when the helper has none."""
        return self._answer_to_get(server_url, await self._run("get", server_url.encode()))

    def get_blocking(self, server_url: str) -> HelperCredentials | None:
        """``get`` for a caller with no event loop (``hoist push`` through ``hoist serve``)."""
        import subprocess  # here: most pushes through a daemon run no helper, and skip its import

        with self._starting():
            result = subprocess.run(
                [self.program, "get"], input=server_url.encode(), capture_output=True, check=False
            )
        return self._answer_to_get(server_url, result)

    def _answer_to_get(
        self, server_url: str, result: subprocess.CompletedProcess[bytes]
    ) -> HelperCredentials | None:
        if result.returncode != 0:
            if _is_not_found(result.stdout):
                return None
            raise self._failed("get", server_url, result)
        return self._decode_get(server_url, result.stdout)

    async def store(self, credentials: HelperCredentials) -> None:
        request = {
            "ServerURL": credentials.server_url,
            "Username": credentials.username,
            "Secret": credentials.secret,
        }
        result = await self._run("store", json.dumps(request).encode())
        if result.returncode != 0:
            raise self._failed("store", credentials.server_url, result, credentials.secret)

    async def erase(self, server_url: str) -> bool:
        """Forget ``server_url``; False when the helper had nothing stored for it."""
        result = await self._run("erase", server_url.encode())
        if result.returncode == 0:
            return True
        if _is_not_found(result.stdout):
            return False
        raise self._failed("erase", server_url, result)

    async def _run(self, action: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        import anyio  # here: get_blocking's callers have no event loop, and skip its import

        with self._starting():
            return await anyio.run_process([self.program, action], input=stdin, check=False)

    @contextlib.contextmanager
    def _starting(self) -> Iterator[None]:
        """Starting the program: one clear error where it is missing or not executable."""
        try:
            yield
        except FileNotFoundError:
            raise CredentialHelperError(
                f"credential helper {self.program} not found on PATH"
                f" (configured as {self.name!r} in config.json)"
            ) from None
        except PermissionError:
            raise CredentialHelperError(
                f"credential helper {self.program} cannot be executed (permission denied)"
            ) from None

    def _decode_get(self, server_url: str, stdout: bytes) -> HelperCredentials:
        # The answer holds the secret: errors about it must not quote it.
        try:
            answer = json.loads(stdout)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise CredentialHelperError(
                f"credential helper {self.program} answered get for {server_url} with"
                " something that is not a JSON object"
            )
        username, secret = answer.get("Username", ""), answer.get("Secret", "")
        if not isinstance(username, str) or not isinstance(secret, str):
            raise CredentialHelperError(
                f"credential helper {self.program} answered get for {server_url} with"
                " a Username or Secret that is not a string"
            )
        return HelperCredentials(server_url=server_url, username=username, secret=secret)

    def _failed(
        self,
        action: str,
        server_url: str,
        result: subprocess.CompletedProcess[bytes],
        secret: str = "",
    ) -> CredentialHelperError:
        # Helpers print their error on stdout; stderr may hold anything, so it is not quoted.
        return CredentialHelperError(
            f"credential helper {self.program} failed to {action} credentials for {server_url}"
            f" (exit status {result.returncode}){_quote(result.stdout, secret)}"
        )
