"""Progress: typed events on an asyncio.Queue, and the renderers that draw them."""

from engine.progress.events import (
    LayerProgress,
    LayerStatus,
    Measure,
    Message,
    ProgressEvent,
    ProgressSink,
    PushCancelled,
    PushComplete,
    PushEnded,
    PushFailed,
)

__all__ = [
    "LayerProgress",
    "LayerStatus",
    "Measure",
    "Message",
    "ProgressEvent",
    "ProgressSink",
    "PushCancelled",
    "PushComplete",
    "PushEnded",
    "PushFailed",
]
