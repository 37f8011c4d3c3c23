"""A registry in memory behind the ``RegistryAPI`` a push uses, for unit tests of pure logic.

The real registry is exercised in tests/integration (and through a fault proxy there); this one
makes failures exact and countable: which request breaks, after how many bytes, and whether the
registry keeps the part of a body that reached it (as the spec says) or drops the session (as
CNCF Distribution does). As in a real registry, a blob's bytes are kept once (``blobs``) and
linked into each repository that holds it (``links``): by a commit, or by a mount from a
repository that has it (or, anonymous, from anywhere).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterable
from dataclasses import dataclass, field

from engine.digest import Digest
from engine.errors import (
    BlobUploadInvalidError,
    BlobUploadUnknownError,
    DeniedError,
    DigestInvalidError,
    RegistryResponseError,
    TransportError,
)
from engine.registry.auth_config import AuthConfig
from engine.registry.protocol import Absence, UploadSession, UploadStatus
from engine.store import V2Metadata


@dataclass
class Faults:
    """What goes wrong. Counted faults happen once; ``deny`` and ``unavailable`` always."""

    #: The n-th PATCH (streamed or chunk) breaks: a streamed one after ``break_at`` bytes.
    break_patch: int | None = None
    break_at: int = 0
    #: The first commit goes through but its answer is lost.
    lose_commit_answer: bool = False
    #: The first body (a PATCH, or a commit carrying one) is refused as too large (413).
    refuse_large: bool = False
    #: Every PATCH is refused: 403 DENIED.
    deny: bool = False
    #: The first commit carrying a body breaks half-way through it.
    fail_put_with_body: bool = False
    #: The n-th body received (a PATCH, or a commit carrying one) is refused: 400.
    reject_body: int | None = None
    #: Requests (by method name) that always fail: 503, as a registry that is down.
    unavailable: frozenset[str] = frozenset()


@dataclass
class MemoryRegistry:
    keeps_partial: bool = True
    faults: Faults = field(default_factory=Faults)
    base: str = "memory://registry"
    blobs: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, set[str]] = field(default_factory=dict)  # repository → digests
    manifests: dict[str, bytes] = field(default_factory=dict)  # by tag or digest
    manifest_links: dict[str, set[Digest]] = field(default_factory=dict)  # repository → digests
    sessions: dict[str, bytearray] = field(default_factory=dict)
    patches: list[tuple[str, int | None, int]] = field(default_factory=list)  # (loc, start, n)
    deleted: list[str] = field(default_factory=list)
    #: Every request made, by method name.
    calls: Counter[str] = field(default_factory=Counter)
    opened: int = 0
    uploads: int = 0  # bodies received: PATCHes and commits carrying one
    puts_with_body: int = 0

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if name in self.faults.unavailable:
            raise RegistryResponseError(f"{name}: 503 Service Unavailable", status=503)

    async def head_blob(self, repository: str, digest: Digest) -> int | Absence:
        self._call("head_blob")
        if digest not in self.links.get(repository, set()):
            return Absence.MISSING
        return len(self.blobs[digest])

    async def initiate_upload(self, repository: str) -> UploadSession:
        self._call("initiate_upload")
        self.opened += 1
        location = f"s{self.opened}"
        self.sessions[location] = bytearray()
        return UploadSession(location)

    async def mount_blob(
        self, repository: str, digest: Digest, source: str | None
    ) -> UploadSession | None:
        self._call("mount_blob")
        held = digest in self.blobs if source is None else digest in self.links.get(source, set())
        if held:
            self.links.setdefault(repository, set()).add(digest)
            return None
        self.calls["initiate_upload"] -= 1  # one request, not two
        return await self.initiate_upload(repository)

    async def patch_blob(
        self,
        repository: str,
        location: str,
        body: AsyncIterable[bytes],
        length: int | None = None,
    ) -> str:
        self._call("patch_blob")
        self._receive_body()
        if self.faults.deny:
            raise DeniedError("denied: no", status=403)
        session = self._session(location)
        received = 0
        number = len(self.patches) + 1
        async for piece in body:
            if number == self.faults.break_patch and received + len(piece) > self.faults.break_at:
                keep = self.faults.break_at - received
                session += piece[:keep]
                self.patches.append((location, None, received + keep))
                if not self.keeps_partial:
                    del self.sessions[location]
                raise TransportError("connection reset")
            session += piece
            received += len(piece)
        assert length is None or received == length, "a body must be as long as it said"
        self.patches.append((location, None, received))
        return location

    async def patch_chunk(self, repository: str, location: str, chunk: bytes, start: int) -> str:
        self._call("patch_chunk")
        self._receive_body()
        session = self._session(location)
        number = len(self.patches) + 1
        assert start == len(session), "Content-Range must start where it ended"
        self.patches.append((location, start, len(chunk)))
        if number == self.faults.break_patch:
            raise TransportError("connection reset")
        session += chunk
        return location

    async def upload_status(self, repository: str, location: str) -> UploadStatus | None:
        self._call("upload_status")
        return UploadStatus(location, len(self._session(location)))

    async def commit_blob(
        self, repository: str, location: str, digest: Digest, body: bytes = b""
    ) -> None:
        self._call("commit_blob")
        if body:
            self._receive_body()
        session = self._session(location)
        if body and self.faults.fail_put_with_body:
            self.faults.fail_put_with_body = False
            session += body[: len(body) // 2]
            raise TransportError("connection reset")
        self.puts_with_body += bool(body)
        data = bytes(self.sessions.pop(location)) + body
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            # As Distribution: the session is cancelled with the refusal.
            raise DigestInvalidError("provided digest did not match uploaded content", status=400)
        self.blobs[digest] = data
        self.links.setdefault(repository, set()).add(digest)
        if self.faults.lose_commit_answer:
            self.faults.lose_commit_answer = False
            raise TransportError("the answer never came")

    async def cancel_upload(self, repository: str, location: str) -> None:
        self._call("cancel_upload")
        self.deleted.append(location)
        self.sessions.pop(location, None)

    async def head_manifest(self, repository: str, digest: Digest, media_type: str) -> bool:
        self._call("head_manifest")
        return digest in self.manifest_links.get(repository, set())

    async def put_manifest(
        self, repository: str, reference: str, media_type: str, data: bytes
    ) -> Digest:
        self._call("put_manifest")
        self.manifests[reference] = data
        self.manifest_links.setdefault(repository, set()).add(Digest.of(data))
        return Digest.of(data)

    def _receive_body(self) -> None:
        self.uploads += 1
        if self.faults.refuse_large:
            self.faults.refuse_large = False
            raise RegistryResponseError("request entity too large", status=413)
        if self.uploads == self.faults.reject_body:
            raise BlobUploadInvalidError("broken on purpose", status=400)

    def _session(self, location: str) -> bytearray:
        session = self.sessions.get(location)
        if session is None:
            raise BlobUploadUnknownError("blob upload unknown", status=404, url=location)
        return session


class MemoryMetadataStore:
    """Stands for the store under a ``MetadataService``: keeps what it is told to forget."""

    def __init__(self) -> None:
        self.removed: list[V2Metadata] = []

    async def remove_v2_metadata(self, entry: V2Metadata) -> None:
        self.removed.append(entry)


class OnePool:
    """A pusher's pool of clients that hands out one registry, with no credentials."""

    def __init__(self, registry: MemoryRegistry) -> None:
        self.registry = registry

    async def client(self, domain: str) -> MemoryRegistry:
        return self.registry

    async def credentials(self, domain: str) -> AuthConfig:
        return AuthConfig()
