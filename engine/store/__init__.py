"""The local store: images, tags, layers and push metadata in Docker's on-disk layout."""

from engine.data_root import default_root
from engine.store.layers import chain_ids
from engine.store.metadata import MAX_METADATA, V2Metadata, check_hmac, compute_hmac
from engine.store.store import ImageDetails, ImageSummary, LayerMetadata, MetadataUpdate, Store

__all__ = [
    "MAX_METADATA",
    "ImageDetails",
    "ImageSummary",
    "LayerMetadata",
    "MetadataUpdate",
    "Store",
    "V2Metadata",
    "chain_ids",
    "check_hmac",
    "compute_hmac",
    "default_root",
]
