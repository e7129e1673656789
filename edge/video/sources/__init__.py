"""Camera sources behind one protocol: synthetic, PyAV (RTSP, files, V4L2) and picamera2.

Only :mod:`edge.video.sources.base` is imported here; backends are imported by
:func:`open_source` when a camera uses them (picamera2 needs libcamera, present only on a Pi).
"""

from __future__ import annotations

from edge.video.sources.base import (
    Item,
    Source,
    SourceError,
    SourceState,
    ThreadedSource,
    open_source,
)

__all__ = ["Item", "Source", "SourceError", "SourceState", "ThreadedSource", "open_source"]
