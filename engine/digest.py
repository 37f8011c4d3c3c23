"""Content digests (``algorithm:hex``) as a value type, parsed once at the edge."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from engine.errors import ImageSourceError

if TYPE_CHECKING:
    import hashlib

_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX = re.compile(r"[a-f0-9]+")
#: Nearly every digest is one of these: one match settles it (the store parses thousands).
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")


class Digest(str):
    """A digest such as ``sha256:…``; ``str(d)`` is the ``algorithm:hex`` form."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Validate ``text`` as the OCI digest grammar (with known lengths for sha2)."""
        if _SHA256.fullmatch(text):
            return cls(text)
        if not _DIGEST.fullmatch(text):
            raise ImageSourceError(f"invalid digest {text!r}")
        algorithm, _, encoded = text.partition(":")
        expected = _HEX_LENGTHS.get(algorithm)
        if expected is not None and (len(encoded) != expected or not _LOWER_HEX.fullmatch(encoded)):
            raise ImageSourceError(f"invalid digest {text!r}")
        return cls(text)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The sha256 digest of ``data``."""
        import hashlib  # here: ``hoist push`` through a daemon parses digests, never hashes

        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hash(cls, hasher: hashlib._Hash) -> Digest:
        return cls(f"{hasher.name}:{hasher.hexdigest()}")

    @property
    def algorithm(self) -> str:
        return self.partition(":")[0]

    @property
    def hex(self) -> str:
        return self.partition(":")[2]

    @property
    def short(self) -> str:
        """The 12-character form Docker shows as a layer's ID in progress output."""
        return self.hex[:12]
