"""Progress: typed events on an asyncio.Queue, and the renderers that draw them."""

from engine.progress.events import (
    LayerProgress,
    Message,
    ProgressEvent,
    ProgressSink,
    PushComplete,
    PushFailed,
)

__all__ = [
    "LayerProgress",
    "Message",
    "ProgressEvent",
    "ProgressSink",
    "PushComplete",
    "PushFailed",
]
