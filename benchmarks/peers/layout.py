"""Reading one image out of an OCI layout, for the Python drivers: standard library only.

A driver script imports this as a sibling module (the script's own directory is first on
``sys.path``), so that every driver finds the manifest and its blobs the same way.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path


@dataclass(frozen=True)
class LayoutImage:
    """One manifest of a layout: its bytes, media type, and the blobs it names (config first)."""

    manifest: bytes
    media_type: str
    blobs: list[Blob]


@dataclass(frozen=True)
class Job:
    """Push the layout image ``ref`` to ``target`` (``HOST:PORT/REPOSITORY:TAG``)."""

    ref: str
    target: str

    @property
    def host(self) -> str:
        return self.target.split("/", 1)[0]

    @property
    def repository(self) -> str:
        return self.target.split("/", 1)[1].rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.target.rsplit(":", 1)[1]


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, encoded = digest.split(":", 1)
    return layout / "blobs" / algorithm / encoded


def read_image(layout: Path, ref: str) -> LayoutImage:
    index = json.loads((layout / "index.json").read_bytes())
    entries = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) == ref]
    if len(entries) != 1:
        raise SystemExit(f"{layout}: no single manifest named {ref!r}")
    manifest = blob_path(layout, entries[0]["digest"]).read_bytes()
    parsed = json.loads(manifest)
    descriptors = [parsed["config"], *parsed["layers"]]
    blobs = [Blob(d["digest"], d["size"], blob_path(layout, d["digest"])) for d in descriptors]
    return LayoutImage(manifest, parsed["mediaType"], blobs)


def parse_jobs(argv: list[str]) -> tuple[Path, list[Job]]:
    """``LAYOUT REF TARGET [REF TARGET ...]``: the layout and the images to push, in order."""
    if len(argv) < 3 or len(argv) % 2 == 0:
        raise SystemExit(f"usage: {sys.argv[0]} LAYOUT REF TARGET [REF TARGET ...]")
    pairs = zip(argv[1::2], argv[2::2], strict=True)
    return Path(argv[0]), [Job(ref, target) for ref, target in pairs]
