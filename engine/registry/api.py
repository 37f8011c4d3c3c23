"""What a push needs of a registry: the Distribution API's steps, as one interface.

``RegistryClient`` implements it over HTTP; the unit tests' in-memory registry implements it
too, so the push is tested against the same surface it runs on. Each method is one request
(after authentication), named as the spec names the step; an answer the step does not expect
raises a ``RegistryResponseError``, a failed connection a ``TransportError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Protocol

from engine.digest import Digest
from engine.registry.auth_config import AuthConfig
from engine.registry.protocol import Absence, UploadSession, UploadStatus


class RegistryAPI(Protocol):
    #: The endpoint, e.g. ``https://registry.example:5000``: part of every transfer's key.
    base: str

    async def head_blob(self, repository: str, digest: Digest) -> int | Absence:
        """``HEAD`` a blob: its size when the repository has it, else why not."""
        ...

    async def initiate_upload(self, repository: str) -> UploadSession:
        """``POST`` an upload session."""
        ...

    async def mount_blob(
        self, repository: str, digest: Digest, source: str | None
    ) -> UploadSession | None:
        """``POST ?mount=&from=``: None when mounted, else the session the refusal opened;
        without ``source``, OCI 1.1's anonymous mount."""
        ...

    async def patch_blob(
        self,
        repository: str,
        location: str,
        body: AsyncIterable[bytes],
        length: int | None = None,
    ) -> str:
        """Stream ``body`` in one ``PATCH`` (``length`` bytes when known, chunked otherwise);
        the session's next location."""
        ...

    async def patch_chunk(self, repository: str, location: str, chunk: bytes, start: int) -> str:
        """One ``Content-Range`` chunk at ``start``; the session's next location."""
        ...

    async def upload_status(self, repository: str, location: str) -> UploadStatus | None:
        """``GET`` the session: what it holds; None when its ``Range`` cannot be told apart
        (an error answer, a lost session among them, raises)."""
        ...

    async def commit_blob(
        self, repository: str, location: str, digest: Digest, body: bytes = b""
    ) -> None:
        """``PUT ?digest=``: close the session, with the blob's last (or only) bytes."""
        ...

    async def cancel_upload(self, repository: str, location: str) -> None:
        """``DELETE`` a session that will not be committed."""
        ...

    async def head_manifest(self, repository: str, digest: Digest, media_type: str) -> bool:
        """``HEAD`` a manifest of ``media_type`` by digest: whether the repository holds it."""
        ...

    async def put_manifest(
        self, repository: str, reference: str, media_type: str, data: bytes
    ) -> Digest:
        """``PUT`` a manifest by tag or digest; the digest the registry gives it."""
        ...


class Registries(Protocol):
    """Where a push finds the registry of a reference's domain (``RegistryPool``)."""

    async def client(self, domain: str) -> RegistryAPI:
        """The registry serving ``domain``, connected and authenticated as configured."""
        ...

    async def credentials(self, domain: str) -> AuthConfig:
        """The credentials used for ``domain`` (the push metadata's HMAC key derives from them)."""
        ...


async def blob_size(api: RegistryAPI, repository: str, digest: Digest) -> int | None:
    """The blob's size when the repository shows it holds it, else None."""
    size = await api.head_blob(repository, digest)
    return size if isinstance(size, int) else None
