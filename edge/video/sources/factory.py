"""Which source a camera gets: the one module that knows every backend.

Kept apart from :mod:`edge.video.sources.base` so the dependencies go one way: every backend
imports ``base`` (the shared machinery), this module imports the backends, and ``base``
imports none of them. Each backend is imported only when a camera uses it: picamera2 needs
libcamera, present only on a Pi, and a box without V4L2 or RTSP cameras never loads them.
"""

from __future__ import annotations

from edge.config.video import Camera
from edge.video.sources.base import Source, SourceError


def open_source(cam: Camera) -> Source:
    """The source for ``cam`` by its ``source`` kind; SourceError for an unknown kind."""
    if cam.source == "synthetic":
        from edge.video.sources.synthetic import SyntheticSource

        return SyntheticSource(cam)
    if cam.source in ("rtsp", "file"):
        from edge.video.sources.pyav_source import PyAVSource

        return PyAVSource(cam)
    if cam.source == "v4l2":
        from edge.video.sources.pyav_source import V4L2Source

        return V4L2Source(cam)
    if cam.source == "picamera2":
        from edge.video.sources.picamera2_source import Picamera2Source

        return Picamera2Source(cam)
    raise SourceError(f"camera {cam.id!r}: unknown source {cam.source!r}")
