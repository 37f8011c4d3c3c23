"""Which blob a layer is pushed as: this decides which evidence may say it is already there.

A layer comes in one of two kinds, and they are two types so that no code can mistake one for
the other:

- ``FixedBlob``: the source fixes the blob (an OCI layout's or archive's descriptor, the
  compressed blob of a docker-archive, a child of an index). The manifest pushed byte for byte
  names that digest, so only evidence about *that digest* counts: a ``HEAD`` of it, a mount of
  it, the run's record of it. Another compressed form of the same diff ID is another blob.
- ``ToCompress``: a tar that Hoist compresses. The manifest is built from what the push finds, so
  any blob of the same diff ID in the asked algorithm (gzip, or zstd) will do, whatever its
  level: what the push metadata knows by diff ID chooses which compressed form to reuse, or
  Hoist makes its own.

Each kind has its own key for the run's ledger and the transfer manager (``blob …`` against
``diff_id … gzip``), so a record about one never answers for the other, even when a digest and a
diff ID are equal (an uncompressed layer's blob is its tar); nor does a gzip placement answer a
push that asked for zstd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.descriptor import Descriptor
from engine.digest import Digest
from engine.errors import ImageSourceError
from engine.image.base import Layer
from engine.push.compression import DEFAULT, Compression
from engine.store import V2Metadata


def blob_key(digest: Digest) -> str:
    """The ledger's key for one exact blob (a fixed layer, a config)."""
    return f"blob {digest}"


@dataclass(frozen=True)
class FixedBlob:
    """A layer its source hands over as this exact registry blob."""

    blob: Descriptor
    diff_id: Digest | None

    @property
    def key(self) -> str:
        return blob_key(self.blob.digest)

    @property
    def size(self) -> int:
        return self.blob.size

    @property
    def blob_size(self) -> int:
        return self.blob.size

    def locations(self, metadata: Sequence[V2Metadata], own: Digest | None) -> list[V2Metadata]:
        """The records of this very digest; records of other compressed forms say nothing."""
        return [entry for entry in metadata if entry.digest == self.blob.digest]

    def known_digest(self, own: Digest | None) -> Digest:
        return self.blob.digest

    def found(self, digest: Digest, size: int) -> Descriptor:
        """The blob the manifest names, once evidence about ``digest`` said it is there."""
        if digest != self.blob.digest:
            raise AssertionError(f"evidence about {digest} taken for the fixed blob {self.blob}")
        return self.blob


@dataclass(frozen=True)
class ToCompress:
    """A tar that Hoist compresses; any blob of its diff ID in the asked algorithm stands for it."""

    diff_id: Digest
    #: The tar's size (Docker sizes its search for a layer by it).
    size: int
    compression: Compression = DEFAULT

    @property
    def key(self) -> str:
        return f"diff_id {self.diff_id} {self.compression.algorithm}"

    @property
    def blob_size(self) -> None:
        """Unknown until a compressed blob of the tar is made or found."""
        return None

    def locations(self, metadata: Sequence[V2Metadata], own: Digest | None) -> list[V2Metadata]:
        """The records of blobs of the tar in the asked algorithm: a gzip blob in a schema 2
        manifest, and a push that asked for zstd wants zstd. A record without a media type
        (written before Hoist kept them) counts only when it names ``own``, what Hoist's
        compressor made of the tar: any other could be the tar itself, or another algorithm."""
        accepted = self.compression.layer_media_types
        return [
            entry
            for entry in metadata
            if entry.media_type in accepted or (not entry.media_type and entry.digest == own)
        ]

    def known_digest(self, own: Digest | None) -> Digest | None:
        """What Hoist's deterministic compressor made of the tar before, if it ever did."""
        return own

    def found(self, digest: Digest, size: int) -> Descriptor:
        return Descriptor(self.compression.media_type, digest, size)


LayerBlob = FixedBlob | ToCompress


def layer_blob(layer: Layer, compression: Compression = DEFAULT) -> LayerBlob:
    """The kind of ``layer``, decided once, where the pusher first meets it; ``compression``:
    how Hoist compresses it if it is a tar."""
    if layer.descriptor is not None:
        return FixedBlob(layer.descriptor, layer.diff_id)
    if layer.diff_id is None:
        # Nothing would name it, in the ledger or the push records: every source knows one.
        raise ImageSourceError("a layer with neither a digest nor a diff ID cannot be pushed")
    return ToCompress(layer.diff_id, layer.size, compression)
