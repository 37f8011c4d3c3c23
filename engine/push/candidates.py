"""Where a layer may already be: Docker's choice of existence checks and cross-repository mounts.

Before uploading a layer Docker looks at the push metadata recorded for its diff ID and picks,
by the layer's size, how many mounts from other repositories of the same registry to try and how
many remembered digests to ``HEAD`` in the target repository. Entries are ranked alike for both:
recorded with the same credentials (HMAC) first, then by how many leading path components of the
repository they share with the target, then newest first. Plain functions, no I/O: the layer
upload asks, then makes the requests.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from engine import gojson
from engine.digest import Digest
from engine.errors import InvalidReferenceError
from engine.reference import parse_named
from engine.registry.auth_config import AuthConfig
from engine.store.metadata import V2Metadata, check_hmac

#: Layers up to this size get a single mount attempt: a round trip costs more than the upload.
SMALL_LAYER_MAX_SIZE = 100 * 1024
#: Layers above this size are worth more mounts and checks of digests seen in other repositories.
MIDDLE_LAYER_MAX_SIZE = 10 * 1024 * 1024


@dataclass(frozen=True)
class Effort:
    """How hard to look for a layer before uploading it."""

    mounts: int
    existence_checks: int
    #: Also ``HEAD`` digests recorded for other repositories (a blob is often shared as is).
    check_other_repositories: bool


_SMALL = Effort(mounts=1, existence_checks=1, check_other_repositories=False)
_MIDDLE = Effort(mounts=3, existence_checks=1, check_other_repositories=False)
_BIG = Effort(mounts=4, existence_checks=3, check_other_repositories=True)


def effort_for(size: int | None) -> Effort:
    """Docker's ``getMaxMountAndExistenceCheckAttempts`` for a layer of ``size`` bytes."""
    if size is None:
        return _MIDDLE  # Docker treats a layer of unknown size as a middle-sized one.
    if size > MIDDLE_LAYER_MAX_SIZE:
        return _BIG
    if size > SMALL_LAYER_MAX_SIZE:
        return _MIDDLE
    return _SMALL


def hmac_key(credentials: AuthConfig) -> bytes:
    """Docker's ``ComputeV2MetadataHMACKey``: the digest text of the credentials' JSON.

    Only the secrets go in, never the server address, so the key is the same for one set of
    credentials wherever it is used. Anonymous pushes get no key, so their entries carry no HMAC.
    """
    if credentials.anonymous:
        return b""
    return Digest.of(_key_document(credentials)).encode()


def _key_document(credentials: AuthConfig) -> bytes:
    """The JSON Go marshals for Docker's ``authConfigKeyInput``: fields in its order, empty ones
    omitted. Its ``auth`` field (between password and identity token) is always empty by then:
    the Docker CLI decodes it into username and password, as Hoist does."""
    fields = {
        "username": credentials.username,
        "password": credentials.password,
        "identitytoken": credentials.identity_token,
        "registrytoken": credentials.registry_token,
    }
    document = {name: value for name, value in fields.items() if value}
    # The HMAC key hashes Go's exact bytes. surrogatepass: a malformed secret must not crash a
    # push; it only yields its own key.
    return gojson.marshal(document).encode("utf-8", "surrogatepass")


def mount_candidates(
    target: str, key: bytes, metadata: Sequence[V2Metadata], max_candidates: int
) -> list[V2Metadata]:
    """Docker's ``getRepositoryMountCandidates``: entries of other repositories in the registry of
    ``target`` (a full name), best first; at most ``max_candidates`` (all when negative)."""
    if not metadata:
        return []  # most layers of a first push: no need to parse the target's name
    domain = parse_named(target).domain
    same_registry = [
        entry
        for entry in metadata
        if entry.source_repository != target and _domain(entry.source_repository) == domain
    ]
    ranked = _rank(target, key, same_registry)
    return ranked if max_candidates < 0 else ranked[:max_candidates]


def existence_candidates(
    target: str,
    metadata: Sequence[V2Metadata],
    max_checks: int,
    check_other: bool,
    *,
    key: bytes = b"",
    checked: Container[Digest] = frozenset(),
) -> list[V2Metadata]:
    """Docker's choice in ``layerAlreadyExists``: the entries whose digests to ``HEAD`` in
    ``target``, best first, one per digest, at most ``max_checks``.

    Entries of other repositories count only with ``check_other``; entries with no repository
    always count. ``key`` ranks as for mounts; digests in ``checked`` were already tried."""
    eligible = [
        entry for entry in metadata if check_other or entry.source_repository in ("", target)
    ]
    chosen: dict[Digest, V2Metadata] = {}
    for entry in _rank(target, key, eligible):
        if len(chosen) >= max_checks:
            break
        # The first entry of a digest is its best; a later one would repeat the same HEAD.
        if entry.digest not in chosen and entry.digest not in checked:
            chosen[entry.digest] = entry
    return list(chosen.values())


def _domain(name: str) -> str | None:
    """The registry of a recorded repository; None when it is not a canonical name."""
    try:
        return parse_named(name).domain
    except InvalidReferenceError:
        return None


def _rank(target: str, key: bytes, entries: Sequence[V2Metadata]) -> list[V2Metadata]:
    """Docker's ``sortV2MetadataByLikenessAndAge``: same credentials first, then most shared
    leading path components; ties stay newest first (metadata lists are oldest first)."""
    target_components = target.split("/")

    def likeness(entry: V2Metadata) -> tuple[bool, int]:
        shared = _shared_components(entry.source_repository.split("/"), target_components)
        return (not check_hmac(entry, key), -shared)

    return sorted(reversed(entries), key=likeness)


def _shared_components(components: Sequence[str], target_components: Sequence[str]) -> int:
    """Docker's ``numOfMatchingPathComponents``: how many leading components are equal."""
    shared = 0
    for component, target_component in zip(components, target_components, strict=False):
        if component != target_component:
            break
        shared += 1
    return shared
