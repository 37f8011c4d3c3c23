"""Images as an interface of blobs: every source implements ``Image``; the pusher knows no more."""

from engine.image import media_types
from engine.image.base import (
    Descriptor,
    FileLayer,
    Image,
    IndexChild,
    Layer,
    SourceImage,
    SourceIndex,
)

__all__ = [
    "Descriptor",
    "FileLayer",
    "Image",
    "IndexChild",
    "Layer",
    "SourceImage",
    "SourceIndex",
    "media_types",
]
