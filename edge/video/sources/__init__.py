"""Camera sources behind one protocol: synthetic, PyAV (RTSP, files, V4L2) and picamera2.

``base`` holds the protocol and the machinery the backends share; ``factory`` picks the
backend of a camera and imports it only then (picamera2 needs libcamera, present only on a
Pi). Backends import ``base``; nothing imports a backend but ``factory``.
"""

from __future__ import annotations

from edge.video.sources.base import Item, Source, SourceError, SourceState, ThreadedSource
from edge.video.sources.factory import open_source

__all__ = ["Item", "Source", "SourceError", "SourceState", "ThreadedSource", "open_source"]
