"""The registry's own answers, asked with the standard library: not Hoist's client.

What Hoist pushed is judged by what the registry says of it, repository by repository: the
manifest under a tag, and a ``HEAD`` of every blob it names *in that repository* (a blob that
only another repository holds is a manifest the registry should never have taken). Deleting a
blob or a manifest through the API plays garbage collection and users who clean up.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from engine import media_types
from tests.support.registry import LocalRegistry

_ACCEPT = ", ".join(sorted(media_types.MANIFESTS | media_types.INDEXES))
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def ask(
    registry: LocalRegistry, method: str, path: str, accept: str = "", byte_range: str = ""
) -> Answer:
    # No proxy: a proxy from the environment must never stand between a test and loopback.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=registry.ssl_context())
    )
    headers = {"Accept": accept} if accept else {}
    if byte_range:
        headers["Range"] = f"bytes={byte_range}"
    request = urllib.request.Request(f"{registry.url}{path}", method=method, headers=headers)
    try:
        with opener.open(request, timeout=30) as answer:
            return Answer(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


@dataclass(frozen=True)
class Manifest:
    digest: str
    raw: bytes

    @property
    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed

    def blobs(self) -> list[dict[str, Any]]:
        """The config and layers of an image manifest (none for an index)."""
        document = self.document
        config = [document["config"]] if "config" in document else []
        return config + list(document.get("layers", []))

    def children(self) -> list[str]:
        """The digests an index lists (none for an image manifest)."""
        return [child["digest"] for child in self.document.get("manifests", [])]


def manifest(registry: LocalRegistry, repository: str, reference: str) -> Manifest | None:
    answer = ask(registry, "GET", f"/v2/{repository}/manifests/{reference}", _ACCEPT)
    if answer.status == 404:
        return None
    assert answer.status == 200, (answer.status, answer.body[:200])
    return Manifest(answer.headers["Docker-Content-Digest"], answer.body)


def blob_size(registry: LocalRegistry, repository: str, digest: str) -> int | None:
    """The size a ``HEAD`` of the blob in ``repository`` gives; None when it is not there."""
    answer = ask(registry, "HEAD", f"/v2/{repository}/blobs/{digest}")
    if answer.status == 404:
        return None
    assert answer.status == 200, answer.status
    assert answer.headers["Docker-Content-Digest"] == digest
    return int(answer.headers["Content-Length"])


def delete_blob(registry: LocalRegistry, repository: str, digest: str) -> bool:
    """Unlink the blob from ``repository``; whether it was there."""
    answer = ask(registry, "DELETE", f"/v2/{repository}/blobs/{digest}")
    assert answer.status in (202, 404), (answer.status, answer.body[:200])
    return answer.status == 202


def delete_manifest(registry: LocalRegistry, repository: str, reference: str) -> bool:
    """Delete the manifest a tag names (and so the tag); whether there was one."""
    found = manifest(registry, repository, reference)
    if found is None:
        return False
    answer = ask(registry, "DELETE", f"/v2/{repository}/manifests/{found.digest}")
    assert answer.status in (202, 404), (answer.status, answer.body[:200])
    return answer.status == 202


def is_gzip(registry: LocalRegistry, repository: str, digest: str) -> bool:
    """Whether the blob starts as gzip does (its first two bytes)."""
    answer = ask(registry, "GET", f"/v2/{repository}/blobs/{digest}", byte_range="0-1")
    assert answer.status in (200, 206), answer.status
    return answer.body[:2] == GZIP_MAGIC


def missing_blobs(registry: LocalRegistry, repository: str, found: Manifest) -> list[str]:
    """What ``found`` names that ``repository`` does not hold with the size it states, or holds
    as something else than its media type says gzip (its children's blobs too, for an index)."""
    missing = [
        f"{blob['digest']} ({blob['size']} bytes)"
        for blob in found.blobs()
        if blob_size(registry, repository, blob["digest"]) != blob["size"]
    ]
    missing += [
        f"{blob['digest']} (named {blob['mediaType']}, not gzip)"
        for blob in found.blobs()
        if blob["mediaType"].endswith("gzip")
        and blob["size"] > 0
        and not is_gzip(registry, repository, blob["digest"])
    ]
    for child_digest in found.children():
        child = manifest(registry, repository, child_digest)
        if child is None:
            missing.append(f"manifest {child_digest}")
        else:
            missing += missing_blobs(registry, repository, child)
    return missing


def assert_pushed_whole(registry: LocalRegistry, repository: str, tag: str, digest: str) -> None:
    """The invariant of every push: the tag names the manifest Hoist printed, and the repository
    holds every blob that manifest names, at the size it states."""
    found = manifest(registry, repository, tag)
    assert found is not None, f"{repository}:{tag} is not in the registry"
    assert found.digest == digest, f"{repository}:{tag} is {found.digest}, Hoist said {digest}"
    missing = missing_blobs(registry, repository, found)
    assert not missing, f"{repository}:{tag} names blobs the repository lacks as named: {missing}"
