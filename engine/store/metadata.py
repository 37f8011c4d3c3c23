"""Distribution metadata: which compressed digest each layer had in which repository.

Docker keeps, per diff ID, a JSON list of ``{"Digest", "SourceRepository", "HMAC"}`` (the newest
last, at most ``MAX_METADATA``), and per compressed digest the diff ID it decompresses to. The
pusher reads them to skip uploads ("Layer already exists") and to pick cross-repository mounts.
The HMAC ties an entry to the credentials it was pushed with, without storing them.

Functions here are blocking; the ``Store`` runs read-modify-writes under its lock.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from engine.digest import Digest
from engine.errors import HoistError, StoreError
from engine.store.atomic import read_file, read_json, write_file, write_json
from engine.store.layout import Layout

#: Entries kept per diff ID, as Docker keeps them.
MAX_METADATA = 50


@dataclass(frozen=True)
class V2Metadata:
    """One known location of a layer: its compressed ``digest`` in ``source_repository``.

    ``media_type`` is Hoist's addition to Docker's entry (which Docker's decoder skips): what the
    blob is, gzip or not. Entries written before it carry none.
    """

    digest: Digest
    source_repository: str
    hmac: str = ""
    media_type: str = ""

    def to_json(self) -> dict[str, str]:
        document = {
            "Digest": str(self.digest),
            "SourceRepository": self.source_repository,
            "HMAC": self.hmac,
        }
        if self.media_type:
            document["MediaType"] = self.media_type
        return document

    @classmethod
    def from_json(cls, data: Any) -> V2Metadata:
        """Decode one entry; ValueError when it is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("SourceRepository"), str):
            raise ValueError(f"not a metadata entry: {data!r}")
        try:
            digest = Digest.parse(str(data.get("Digest")))
        except HoistError as e:
            raise ValueError(str(e)) from e
        media_type = str(data.get("MediaType") or "")
        return cls(digest, data["SourceRepository"], str(data.get("HMAC") or ""), media_type)


def compute_hmac(key: bytes, digest: Digest, source_repository: str) -> str:
    """Docker's ``ComputeV2MetadataHMAC``: hex HMAC-SHA256 of digest + repository ("" if no key).

    Docker's key is the digest text of the JSON of the credentials in use."""
    if not key:
        return ""
    return hmac.new(key, f"{digest}{source_repository}".encode(), hashlib.sha256).hexdigest()


def check_hmac(entry: V2Metadata, key: bytes) -> bool:
    """Docker's ``CheckV2MetadataHMAC``: was ``entry`` recorded with the credentials of ``key``?"""
    if not entry.hmac or not key:
        return not entry.hmac and not key
    expected = compute_hmac(key, entry.digest, entry.source_repository)
    return hmac.compare_digest(expected, entry.hmac.lower())


def read_v2_metadata(layout: Layout, diff_id: Digest) -> list[V2Metadata]:
    """The entries for ``diff_id``, oldest first; none when nothing was recorded."""
    path = layout.v2_metadata_by_diff_id(diff_id)
    value = read_json(path)
    if value is None:
        return []
    try:
        if not isinstance(value, list):
            raise ValueError("not a JSON list")
        return [V2Metadata.from_json(item) for item in value]
    except ValueError as e:
        raise StoreError(f"{path}: {e}") from e


def _write_v2_metadata(layout: Layout, diff_id: Digest, entries: list[V2Metadata]) -> None:
    path = layout.v2_metadata_by_diff_id(diff_id)
    if entries:
        write_json(path, [entry.to_json() for entry in entries], durable=False)
    else:
        path.unlink(missing_ok=True)


def add_v2_metadata(layout: Layout, diff_id: Digest, *entries: V2Metadata) -> None:
    """Append ``entries`` in order as the newest, each replacing an older one for the same digest
    and repository, dropping the oldest beyond ``MAX_METADATA``; then map each digest to
    ``diff_id``. One read and at most one write of the diff ID's file, however many entries."""
    kept = read_v2_metadata(layout, diff_id)
    for entry in entries:
        kept = [e for e in kept if not _same_location(e, entry)]
        kept.append(entry)
    _write_v2_metadata(layout, diff_id, kept[-MAX_METADATA:])
    for digest in dict.fromkeys(entry.digest for entry in entries):
        write_file(layout.diff_id_by_digest(digest), str(diff_id).encode(), durable=False)


def remove_v2_metadata(layout: Layout, entry: V2Metadata) -> None:
    """Forget ``entry`` (a mount from it failed, say); unknown entries are no error."""
    diff_id = read_diff_id_by_digest(layout, entry.digest)
    if diff_id is None:
        return
    entries = read_v2_metadata(layout, diff_id)
    _write_v2_metadata(layout, diff_id, [e for e in entries if not _same_location(e, entry)])


def _same_location(a: V2Metadata, b: V2Metadata) -> bool:
    return a.digest == b.digest and a.source_repository == b.source_repository


def read_diff_id_by_digest(layout: Layout, digest: Digest) -> Digest | None:
    path = layout.diff_id_by_digest(digest)
    data = read_file(path)
    if data is None:
        return None
    try:
        return Digest.parse(data.decode().strip())
    except (UnicodeDecodeError, HoistError) as e:
        raise StoreError(f"{path}: not a diff ID") from e
