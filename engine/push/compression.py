"""How Hoist compresses the layers it compresses: gzip or zstd, at a level. A value, checked once.

gzip is python-isal's (levels 0–3), in 1 MiB blocks compressed apart, those that do not
compress stored (``gzip_member``). The default level was chosen by measuring real files
(``python -m benchmarks.compression --docker``: tars of this machine's /usr/bin, /usr/lib and
/usr/share, against what ``docker push`` wrote of them): isal level 2 writes 7.5 % more bytes
than Docker's gzip-6 in all (10.2 % on /usr/bin's, 5.6 % on /usr/share's) at 1.4–1.6× the
speed of level 3, which writes 1.3 % fewer; level 1 is hardly faster than 2 for 1 % more bytes.
A push from the store is bound by compressing: on those three layers level 2 takes about a
fifth less wall time than 3 (see README's Compression section).

zstd is libzstd's (``zstandard``), levels 1–19: the ultra levels (20–22) take windows of up to
128 MiB per compressor, one per layer compressed at once. Level 3 (zstd's own default) writes
about 15 % fewer bytes than Docker's gzip-6 at over 15× its speed.

A zstd layer has no Docker schema 2 media type: it goes in an OCI image manifest. The name of a
compression (``compressor``) names the bytes it makes: the store keeps what each one made of each
layer apart, so that a re-push finds its own blobs by digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from engine import media_types
from engine.errors import UsageError

Algorithm = Literal["gzip", "zstd"]

#: The levels each algorithm takes, and its default (see the module's docstring for why).
LEVELS: dict[Algorithm, range] = {"gzip": range(0, 4), "zstd": range(1, 20)}
DEFAULT_LEVELS: dict[Algorithm, int] = {"gzip": 2, "zstd": 3}

#: The blob media types a layer of each algorithm may be named by (one it made, or one found).
_LAYER_MEDIA_TYPES: dict[Algorithm, frozenset[str]] = {
    "gzip": frozenset({media_types.DOCKER_LAYER_GZIP, media_types.OCI_LAYER_GZIP}),
    "zstd": frozenset({media_types.OCI_LAYER_ZSTD}),
}


@dataclass(frozen=True)
class Compression:
    """An algorithm and a level that it takes; ``Compression.of`` checks what a caller gives."""

    algorithm: Algorithm = "gzip"
    level: int = DEFAULT_LEVELS["gzip"]

    @classmethod
    def of(cls, algorithm: str = "gzip", level: int | None = None) -> Compression:
        """The compression a caller asks for; a UsageError naming what is allowed otherwise."""
        if algorithm not in get_args(Algorithm):
            raise UsageError(
                f'unknown compression "{algorithm}": use one of {", ".join(get_args(Algorithm))}'
            )
        known: Algorithm = "gzip" if algorithm == "gzip" else "zstd"
        levels = LEVELS[known]
        if level is None:
            return cls(known, DEFAULT_LEVELS[known])
        if isinstance(level, bool) or not isinstance(level, int) or level not in levels:
            raise UsageError(
                f"{known} compression level must be {levels.start} to {levels.stop - 1}, "
                f"not {level}"
            )
        return cls(known, level)

    @property
    def compressor(self) -> str:
        """Names the compressor and its settings: the same name always gives the same bytes."""
        # "isal-blocks2": isal's deflate in blocks made apart, the incompressible ones stored
        # (``gzip_member``), a name of its own since its bytes differ from plain isal's; "2":
        # the probe of sixteen windows ("isal-blocks" stored the blocks that four judged).
        library = "isal-blocks2" if self.algorithm == "gzip" else "libzstd"
        return f"{self.algorithm}-{library}-{self.level}"

    @property
    def media_type(self) -> str:
        """The media type of a layer this compression made, as its manifest names it."""
        return media_types.OCI_LAYER_ZSTD if self.oci_only else media_types.DOCKER_LAYER_GZIP

    @property
    def layer_media_types(self) -> frozenset[str]:
        """The blobs that may stand for a layer pushed with this compression."""
        return _LAYER_MEDIA_TYPES[self.algorithm]

    @property
    def oci_only(self) -> bool:
        """Whether its layers can only go in an OCI image manifest (no schema 2 media type)."""
        return self.algorithm == "zstd"


#: What a push compresses with unless told otherwise.
DEFAULT = Compression()
