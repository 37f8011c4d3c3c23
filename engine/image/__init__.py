"""Images as an interface of blobs: every source implements ``Image``; the pusher knows no more.

What a manifest says of a blob (``engine.descriptor``) and the media types (``engine.media_types``)
are leaves beside this package, shared with the store and the pusher.
"""

from engine.image.base import (
    FileLayer,
    Image,
    IndexChild,
    Layer,
    SourceImage,
    SourceIndex,
)

__all__ = [
    "FileLayer",
    "Image",
    "IndexChild",
    "Layer",
    "SourceImage",
    "SourceIndex",
]
