"""Images as an interface of blobs: every source implements ``Image``; the pusher knows no more."""

from engine.image.base import Descriptor, Image, Layer
from engine.image import media_types

__all__ = ["Descriptor", "Image", "Layer", "media_types"]
