"""The Distribution API as plain functions: URLs to ask, and what an answer means. No I/O.

The client carries bytes; everything it needs to decide (which URL, which headers, what an answer
says, which error it is) is decided here, where it can be tested without a network.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from engine.digest import Digest
from engine.errors import (
    ERROR_CODES,
    STATUS_CLASSES,
    RegistryResponseError,
)

CONTENT_DIGEST_HEADER = "Docker-Content-Digest"


def ping_url(base: str) -> str:
    return f"{base}/v2/"


def blob_url(base: str, repository: str, digest: Digest) -> str:
    return f"{base}/v2/{repository}/blobs/{digest}"


def uploads_url(base: str, repository: str) -> str:
    return f"{base}/v2/{repository}/blobs/uploads/"


def manifest_url(base: str, repository: str, reference: str) -> str:
    return f"{base}/v2/{repository}/manifests/{reference}"


def resolve_location(request_url: str, location: str | None) -> str:
    """The upload URL from a ``Location`` header, which may be absolute or relative."""
    if not location:
        raise RegistryResponseError(
            "registry answered without a Location header", status=0, url=request_url
        )
    if location.startswith(("http://", "https://")):
        return location  # what Distribution sends; urljoin would only take it apart and back
    return urljoin(request_url, location)


def with_query(url: str, **params: str) -> str:
    """Add query parameters to ``url``, keeping its own as they are (Distribution's signed
    ``_state``): they are the registry's, so they are not decoded and encoded again."""
    address, hash_mark, fragment = url.partition("#")
    joint = "" if address.endswith(("?", "&")) else "&" if "?" in address else "?"
    return f"{address}{joint}{urlencode(params)}{hash_mark}{fragment}"


def commit_url(location: str, digest: Digest) -> str:
    return with_query(location, digest=str(digest))


@dataclass(frozen=True)
class UploadSession:
    """An open blob upload: where to send the next request, and the registry's chunk rules."""

    location: str
    #: ``OCI-Chunk-Min-Length``: every chunk but the last must be at least this long.
    min_chunk: int = 0


@dataclass(frozen=True)
class UploadStatus:
    """What the registry holds of an upload: the next location and how many bytes it kept."""

    location: str
    offset: int


class Absence(enum.Enum):
    """Why a blob's ``HEAD`` gave no size."""

    #: 404: the repository does not hold it (a record that said it does is wrong).
    MISSING = "missing"
    #: 200, but not the blob (a web page, another digest, no size): nothing was learnt.
    UNPROVEN = "unproven"


def present_size(headers: Mapping[str, str], digest: Digest) -> int | None:
    """The blob's size from a ``200`` to its ``HEAD``; None when the answer proves nothing.

    A registry states the size, and names the digest (Distribution always does; object storage
    behind a redirect may not). An answer that is not about the blob (``names_digest``), or
    without a size, proves nothing.
    """
    length = headers.get("Content-Length", "").strip()
    # isascii: str.isdigit() also admits "²" and other digits int() refuses.
    is_size = length.isascii() and length.isdigit()
    return int(length) if is_size and names_digest(headers, digest) else None


def names_digest(headers: Mapping[str, str], digest: Digest) -> bool:
    """Whether a ``200`` to a ``HEAD`` of ``digest`` is about it: the digest it names is that
    one, or it names none and is not a web page (a proxy's error or sign-in page answering 200)."""
    given = headers.get(CONTENT_DIGEST_HEADER)
    if given is not None:
        return given.strip() == str(digest)
    return not headers.get("Content-Type", "").lower().startswith("text/html")


def chunk_min_length(headers: Mapping[str, str]) -> int:
    try:
        return max(0, int(headers.get("OCI-Chunk-Min-Length", "0")))
    except ValueError:
        return 0


def committed_offset(range_header: str | None) -> int | None:
    """Bytes the registry kept, from its ``Range: 0-LAST``; None when that cannot be told.

    CNCF Distribution answers ``0-0`` both for an empty session and for one holding one byte
    (older versions ``0--1`` for empty). A new session costs no more than that one byte, so an
    ambiguous answer is taken as "start again".
    """
    if not range_header:
        return 0
    _, _, last = range_header.strip().removeprefix("bytes=").partition("-")
    try:
        end = int(last)
    except ValueError:
        return None
    if end == 0:
        return None
    return max(0, end + 1)


def content_range(start: int, length: int) -> str:
    """The ``Content-Range`` of a chunk: inclusive, without a unit, as the spec writes it."""
    return f"{start}-{start + length - 1}"


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port: credentials only go where they came from."""
    pa, pb = urlsplit(a), urlsplit(b)
    try:
        return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)
    except ValueError:  # a port that is no number: not an origin credentials may go to
        return False


def origin_prefix(url: str) -> str:
    """``scheme://netloc/``: any URL that starts with it has ``url``'s origin (the netloc ends
    at the first slash), so a plain prefix test settles the common case of ``same_origin``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


@dataclass(frozen=True)
class ErrorDetail:
    code: str | None
    message: str
    detail: Any = None


def parse_errors(body: bytes) -> list[ErrorDetail]:
    """The spec's ``{"errors": [{code, message, detail}]}``; anything else yields nothing."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        return []
    details = []
    for item in document["errors"]:
        if isinstance(item, dict):
            code = item.get("code")
            details.append(
                ErrorDetail(
                    code=code if isinstance(code, str) else None,
                    message=str(item.get("message") or ""),
                    detail=item.get("detail"),
                )
            )
    return details


#: What an error answer without a body means (HEAD answers never carry one).
STATUS_MESSAGES = {
    401: "unauthorized: authentication required",
    403: "denied: requested access to the resource is denied",
    404: "not found",
    405: "unsupported: the operation is unsupported",
    429: "toomanyrequests: too many requests",
}


def _describe(details: list[ErrorDetail], status: int, reason: str) -> str:
    """Docker's wording: ``code in words: message`` (``blob unknown: blob unknown to registry``)."""
    if details:
        first = details[0]
        words = (first.code or "").lower().replace("_", " ")
        if words and first.message:
            return f"{words}: {first.message}"
        if words or first.message:
            return words or first.message
    if status in STATUS_MESSAGES:
        return STATUS_MESSAGES[status]
    return f"received unexpected HTTP status: {status} {reason or _phrase(status)}".strip()


def _described(details: list[ErrorDetail], status: int, reason: str, request: str) -> str:
    """Every error the answer lists; a bare status also names the request it answered."""
    if not details:
        described = _describe(details, status, reason)
        return f"{request}: {described}" if request and status not in STATUS_MESSAGES else described
    messages = [_describe([detail], status, reason) for detail in details]
    return "; ".join(dict.fromkeys(messages))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def decode_error(
    status: int,
    body: bytes,
    *,
    method: str = "",
    url: str = "",
    reason: str = "",
    retry_after: float | None = None,
) -> RegistryResponseError:
    """Turn an error answer (JSON, HTML, empty, garbage) into one typed error."""
    details = parse_errors(body)
    code = details[0].code if details else None
    cls = ERROR_CODES.get(code or "") or STATUS_CLASSES.get(status) or RegistryResponseError
    message = _described(details, status, reason, f"{method} {url}".strip())
    return cls(
        message,
        status=status,
        code=code,
        codes=tuple(detail.code for detail in details if detail.code),
        detail=details[0].detail if details else None,
        method=method,
        url=url,
        retry_after=retry_after,
    )
