"""One exception tree for everything Hoist raises on purpose.

    HoistError
    ├── UsageError                                a mistake in the call: flags that clash, an
    │                                             Engine used from a second event loop
    ├── InvalidReferenceError (also ValueError)   a reference that does not parse
    ├── ImageNotFoundError                        no such image or tag in the store
    ├── StoreError                                the local store is unreadable or inconsistent
    ├── SettingsError                             daemon.json that cannot be used
    ├── ConfigError                               config.json unreadable, not JSON, wrong kinds
    ├── CredentialHelperError                     a credential helper missing, failed, off-protocol
    ├── TLSConfigError                            a certs.d directory that cannot be used
    ├── ImageSourceError                          an archive or layout that cannot be used
    │   ├── UnsafeArchiveError                    an entry that escapes (.., absolute, links)
    │   └── DigestMismatchError                   content that does not hash to its digest
    ├── PushError                                 the push itself cannot go on
    │   └── DigestReferenceError                  "cannot push a digest reference"
    ├── DaemonError                               a hoist serve that push goes through
    │   │                                         refused the request
    │   ├── DaemonUnreachable                     nothing answers at its address
    │   └── DaemonStreamError                     its message stream cannot be read
    └── RegistryError                             the registry refused or could not be reached
        ├── TransportError                        connection refused, reset, timed out, TLS
        └── RegistryResponseError                 an HTTP answer that is an error (code, status)
            ├── UnauthorizedError                 UNAUTHORIZED / 401
            ├── DeniedError                       DENIED / 403
            ├── NameUnknownError                  NAME_UNKNOWN
            ├── NameInvalidError                  NAME_INVALID
            ├── BlobUnknownError                  BLOB_UNKNOWN
            ├── BlobUploadUnknownError            BLOB_UPLOAD_UNKNOWN
            ├── BlobUploadInvalidError            BLOB_UPLOAD_INVALID
            ├── DigestInvalidError                DIGEST_INVALID
            ├── ManifestInvalidError              MANIFEST_INVALID / MANIFEST_BLOB_UNKNOWN …
            ├── SizeInvalidError                  SIZE_INVALID
            ├── UnsupportedError                  UNSUPPORTED / 405
            └── TooManyRequestsError              TOOMANYREQUESTS / 429

The CLI maps every HoistError to one ``Error: …`` line and exit code 1; anything else is a bug.
"""

from __future__ import annotations


class HoistError(Exception):
    """Base of every error Hoist raises on purpose."""


class UsageError(HoistError):
    """A mistake in how Hoist is called: command-line options that do not go together, a value
    that does not parse, an ``Engine`` used from another event loop than its first."""


class InvalidReferenceError(HoistError, ValueError):
    """A reference that does not follow Docker's grammar: ``reason`` says why (Docker's words),
    ``reference`` is the text refused, when there was one to name."""

    def __init__(self, reason: str, reference: str | None = None) -> None:
        super().__init__(reason if reference is None else f'{reason}: "{_shown(reference)}"')
        self.reason = reason
        self.reference = reference


def _shown(text: str, limit: int = 120) -> str:
    """``text`` for a one-line message: a 20 000-character reference is cut, not printed."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


class ImageNotFoundError(HoistError):
    """No image with that reference or ID in the local store."""


class StoreError(HoistError):
    """The local store cannot be read or written."""


class SettingsError(HoistError):
    """daemon.json that cannot be used."""


class ConfigError(HoistError):
    """``config.json`` cannot be read, is not JSON, or holds values of the wrong kind."""


class CredentialHelperError(HoistError):
    """A credential helper is missing, failed, or answered something that is not its protocol."""


class TLSConfigError(HoistError):
    """A certs.d directory that cannot be used (a key without its certificate, unreadable files)."""


class ImageSourceError(HoistError):
    """An image archive or layout that cannot be used (missing, corrupt, malformed)."""


class UnsafeArchiveError(ImageSourceError):
    """An archive entry that would escape its directory (``..``, absolute path, link)."""


class DigestMismatchError(ImageSourceError):
    """Content whose digest differs from the one that names it."""

    def __init__(self, what: str, expected: str, actual: str | None) -> None:
        """``actual`` None: the registry hashed what was sent, and did not say what it got."""
        found = "the registry found other content" if actual is None else f"got {actual}"
        super().__init__(f"{what}: digest mismatch: expected {expected}, {found}")
        self.expected = expected
        self.actual = actual


class PushError(HoistError):
    """The push cannot go on for a reason of Hoist's own (not the registry's)."""


class DigestReferenceError(PushError):
    def __init__(self) -> None:
        super().__init__("cannot push a digest reference")


class DaemonError(HoistError):
    """``hoist push`` through a running ``hoist serve``: the daemon cannot be reached, or it
    refused the request (its own message, as the docker CLI prints dockerd's)."""


class DaemonUnreachable(DaemonError):
    """Nothing answers at the daemon's address: no request was sent."""


class DaemonStreamError(DaemonError):
    """The daemon's JSON message stream is not what Docker's daemon sends."""


class RegistryError(HoistError):
    """The registry refused a request or could not be reached."""


class TransportError(RegistryError):
    """The connection failed: refused, reset, timed out, or TLS. ``method`` and ``url`` (without
    its query) name the request, when it was one."""

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class RegistryResponseError(RegistryError):
    """An error answer from the registry, decoded from its body when it has one.

    ``code`` is the spec's error code (``BLOB_UNKNOWN``) or ``None`` when the body carried none.
    ``retry_after`` is the answer's ``Retry-After`` in seconds from when it arrived, if it had one.
    """

    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        codes: tuple[str, ...] = (),
        detail: object = None,
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.code = code or self.default_code
        #: Every code the answer listed, in its order (``code`` is the first).
        self.codes = codes or ((self.code,) if self.code else ())
        self.detail = detail
        self.method = method
        self.url = url

    def reworded(self, message: str) -> RegistryResponseError:
        """The same answer, told in other words (its class and attributes kept)."""
        return type(self)(
            message,
            status=self.status,
            code=self.code,
            codes=self.codes,
            detail=self.detail,
            method=self.method,
            url=self.url,
            retry_after=self.retry_after,
        )


class UnauthorizedError(RegistryResponseError):
    default_code = "UNAUTHORIZED"


class DeniedError(RegistryResponseError):
    default_code = "DENIED"


class NameUnknownError(RegistryResponseError):
    default_code = "NAME_UNKNOWN"


class NameInvalidError(RegistryResponseError):
    default_code = "NAME_INVALID"


class BlobUnknownError(RegistryResponseError):
    default_code = "BLOB_UNKNOWN"


class BlobUploadUnknownError(RegistryResponseError):
    default_code = "BLOB_UPLOAD_UNKNOWN"


class BlobUploadInvalidError(RegistryResponseError):
    default_code = "BLOB_UPLOAD_INVALID"


class DigestInvalidError(RegistryResponseError):
    default_code = "DIGEST_INVALID"


class ManifestInvalidError(RegistryResponseError):
    default_code = "MANIFEST_INVALID"


class SizeInvalidError(RegistryResponseError):
    default_code = "SIZE_INVALID"


class UnsupportedError(RegistryResponseError):
    default_code = "UNSUPPORTED"


class TooManyRequestsError(RegistryResponseError):
    default_code = "TOOMANYREQUESTS"


#: The spec's error codes, each to the class that carries it.
ERROR_CODES: dict[str, type[RegistryResponseError]] = {
    "UNAUTHORIZED": UnauthorizedError,
    "DENIED": DeniedError,
    "NAME_UNKNOWN": NameUnknownError,
    "NAME_INVALID": NameInvalidError,
    "BLOB_UNKNOWN": BlobUnknownError,
    "BLOB_UPLOAD_UNKNOWN": BlobUploadUnknownError,
    "BLOB_UPLOAD_INVALID": BlobUploadInvalidError,
    "DIGEST_INVALID": DigestInvalidError,
    "MANIFEST_INVALID": ManifestInvalidError,
    "MANIFEST_UNKNOWN": ManifestInvalidError,
    "MANIFEST_BLOB_UNKNOWN": ManifestInvalidError,
    "MANIFEST_UNVERIFIED": ManifestInvalidError,
    "TAG_INVALID": ManifestInvalidError,
    "SIZE_INVALID": SizeInvalidError,
    "UNSUPPORTED": UnsupportedError,
    "TOOMANYREQUESTS": TooManyRequestsError,
}

#: When the body names no code, the HTTP status still says something.
STATUS_CLASSES: dict[int, type[RegistryResponseError]] = {
    401: UnauthorizedError,
    403: DeniedError,
    405: UnsupportedError,
    429: TooManyRequestsError,
}
