"""Where each piece of the store lives under its root, in Docker's ``image/<driver>/`` layout.

<root>/repositories.json
<root>/imagedb/content/sha256/<image id hex>                  image config bytes
<root>/layerdb/sha256/<chain id hex>/{diff,size,parent,layer.tar}
<root>/layerdb/compressed/<compressor>.json                    diff ID → Hoist's compressed form
<root>/distribution/diffid-by-digest/sha256/<digest hex>       diff ID text
<root>/distribution/v2metadata-by-diffid/sha256/<diff id hex>  JSON list of V2Metadata
<root>/.lock                                                   flock for read-modify-write
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from engine.digest import Digest


def _checked(digest: Digest) -> Digest:
    # The digest grammar admits no "/" and no "..": parsing it keeps every path inside the root.
    return Digest.parse(str(digest))


@dataclass(frozen=True)
class Layout:
    """Paths of one store root; computing them touches nothing on disk."""

    root: Path

    @property
    def repositories(self) -> Path:
        return self.root / "repositories.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def imagedb(self) -> Path:
        return self.root / "imagedb" / "content" / "sha256"

    @property
    def layerdb(self) -> Path:
        return self.root / "layerdb" / "sha256"

    def image_config(self, image_id: Digest) -> Path:
        return self.imagedb / _checked(image_id).hex

    def layer_dir(self, chain_id: Digest) -> Path:
        return self.layerdb / _checked(chain_id).hex

    def compressed_forms(self, compressor: str) -> Path:
        return self.root / "layerdb" / "compressed" / f"{compressor}.json"

    def diff_id_by_digest(self, digest: Digest) -> Path:
        digest = _checked(digest)
        return self._diff_ids_by_digest / digest.algorithm / digest.hex

    def v2_metadata_by_diff_id(self, diff_id: Digest) -> Path:
        diff_id = _checked(diff_id)
        return self._v2_metadata_by_diff_id / diff_id.algorithm / diff_id.hex

    # Joined once: a push records hundreds of these paths, and each join costs a path parse.
    @cached_property
    def _diff_ids_by_digest(self) -> Path:
        return self.root / "distribution" / "diffid-by-digest"

    @cached_property
    def _v2_metadata_by_diff_id(self) -> Path:
        return self.root / "distribution" / "v2metadata-by-diffid"
