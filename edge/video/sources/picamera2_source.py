"""The Raspberry Pi camera (CSI) through picamera2: the SoC encodes, we pass the H.264 on.

picamera2 separates the encoder from its outputs; we use that seam. The camera runs a video
configuration with two streams: ``main`` (YUV420, the recorded size) goes to
``H264Encoder(bitrate, repeat=True, iperiod=fps*gop_s)`` whose output is our own
``Output`` subclass, so packets arrive with their keyframe flag and timestamp (microseconds
from the first frame); ``lores`` (YUV420, about ``analysis_rows`` high) feeds analysis.

Privacy masks are burned into ``main`` in ``pre_callback``, which picamera2 calls for each
completed request before handing it to the encoder, through ``MappedArray`` (a view of the
camera buffer). The analysis frame is copied from ``lores`` in the same callback, so it is
the very picture that is encoded and its timestamp uses the same clock (the request's
``SensorTimestamp``, rebased to the first frame as the encoder does).

picamera2 needs libcamera from the OS and is imported only when a session starts, never at
import time, so this module loads (and is tested, against ``tests/support/fake_picamera2``)
anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.config.video import Camera
from edge.video.frames import EncodedPacket
from edge.video.masks import burn_i420, privacy_mask
from edge.video.sources.base import (
    BACKOFF,
    SourceError,
    ThreadedSource,
    analysis_stride,
    luma_frame,
)
from edge.video.sources.synthetic import ParameterSets, bitrate_kbps

log = logging.getLogger(__name__)

MICROSECONDS = Fraction(1, 1_000_000)
STALL_S = 5.0  # no encoded frame this long: the camera is lost, reopen it
WATCH_S = 0.2


def load_picamera2() -> tuple[Any, Any, Any, Any]:
    """(Picamera2, MappedArray, H264Encoder, Output), imported now, not at module import."""
    try:
        from picamera2 import MappedArray, Picamera2
        from picamera2.encoders import H264Encoder
        from picamera2.outputs import Output
    except ImportError as exc:
        raise SourceError(
            f"picamera2 cannot be imported ({exc}): on Raspberry Pi OS install "
            "python3-picamera2 and create the virtualenv with --system-site-packages"
        ) from exc
    return Picamera2, MappedArray, H264Encoder, Output


def _output_class(base: Any) -> Any:
    """Our ``Output`` subclass; built at run time because ``Output`` is imported lazily."""

    class PacketOutput(base):
        def __init__(self, sink: Any) -> None:
            super().__init__()
            self._sink = sink

        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            if audio or frame is None:
                return
            self._sink(bytes(frame), bool(keyframe), timestamp)

    return PacketOutput


def lores_size(width: int, height: int, rows: int) -> tuple[int, int]:
    """The analysis stream size: the main size divided by the analysis stride, even."""
    s = analysis_stride(height, rows)
    return (max(2, width // s) // 2 * 2, max(2, height // s) // 2 * 2)


class Picamera2Source(ThreadedSource):
    """A CSI camera; reopened with backoff if it stops delivering or cannot be opened."""

    def __init__(
        self, cam: Camera, *, backoff: tuple[float, float] = BACKOFF, stall_s: float = STALL_S
    ) -> None:
        super().__init__(cam.id, live=True, backoff=backoff)
        self.cam = cam
        self.stall_s = stall_s
        self.size = (cam.width - cam.width % 2, cam.height - cam.height % 2)
        self.lores = lores_size(*self.size, cam.motion.analysis_rows)
        self._mask = privacy_mask(cam.privacy_masks, *self.size)
        self._lores_mask = privacy_mask(cam.privacy_masks, *self.lores)
        self._sets = ParameterSets()
        self._last_frame = 0.0
        self._first_us: int | None = None
        self._last_pts = -1
        self._failure: BaseException | None = None
        self._lock = threading.Lock()

    def _session(self) -> bool:
        picamera2_cls, mapped_array, encoder_cls, output_base = load_picamera2()
        try:
            picam2 = picamera2_cls()
        except (RuntimeError, IndexError, OSError) as exc:
            raise SourceError(
                f"no Raspberry Pi camera ({exc!r}): check the ribbon cable and "
                "`rpicam-hello --list-cameras`"
            ) from exc
        self._first_us, self._last_pts, self._failure = None, -1, None
        try:
            self._start(picam2, mapped_array, encoder_cls, output_base)
            return self._watch()
        finally:
            self._teardown(picam2)

    def _start(self, picam2: Any, mapped_array: Any, encoder_cls: Any, output_base: Any) -> None:
        cam = self.cam
        config = picam2.create_video_configuration(
            main={"size": self.size, "format": "YUV420"},
            lores={"size": self.lores, "format": "YUV420"},
            controls={"FrameRate": cam.fps},
            encode="main",
        )
        try:
            picam2.configure(config)
        except RuntimeError as exc:
            raise SourceError(f"the camera refused {self.size[0]}x{self.size[1]}: {exc}") from exc
        picam2.pre_callback = lambda request: self._pre_callback(mapped_array, request)
        gop = max(1, round(cam.fps * cam.gop_s))
        bitrate = bitrate_kbps(*self.size, cam.fps) * 1000
        encoder = encoder_cls(bitrate=bitrate, repeat=True, iperiod=gop)
        self.queue.restart()
        self._last_frame = time.monotonic()
        try:
            picam2.start_encoder(encoder, _output_class(output_base)(self._on_packet))
            picam2.start()
        except RuntimeError as exc:  # busy (another process has it), or the sensor failed
            raise SourceError(f"the camera would not start: {exc}") from exc

    def _watch(self) -> bool:
        """Wait for close (False); raise when frames stop or a callback failed."""
        while not self._stop.wait(WATCH_S):
            if self._failure is not None:
                raise self._failure
            silent = time.monotonic() - self._last_frame
            if silent > self.stall_s:
                raise SourceError(f"the camera sent no frame for {silent:.0f} s")
        return False

    def _teardown(self, picam2: Any) -> None:
        picam2.pre_callback = None
        for step in (picam2.stop, picam2.stop_encoder, picam2.close):
            try:
                step()
            except (RuntimeError, OSError) as exc:  # already stopped, or the camera is gone
                log.debug("camera %s: %s: %s", self.camera, step.__name__, exc)

    # -- picamera2's threads -----------------------------------------------------------------
    def _pre_callback(self, mapped_array: Any, request: Any) -> None:
        """Mask ``main`` before it is encoded; mask and copy ``lores`` for analysis.

        Runs in picamera2's camera thread: an exception here would stop the camera, so it is
        kept for the session thread to raise.
        """
        try:
            w, h = self.size
            with mapped_array(request, "main") as m:
                burn_i420(m.array, self._mask, w, h, m.array.shape[1])
            lw, lh = self.lores
            with mapped_array(request, "lores") as m:  # analysis never sees a hidden area
                burn_i420(m.array, self._lores_mask, lw, lh, m.array.shape[1])
                y: npt.NDArray[np.uint8] = m.array[:lh, :lw]
                pts = self._luma_pts(request)
                self.emit(luma_frame(self.camera, y, pts, MICROSECONDS, 1))
        except Exception as exc:
            log.exception("camera %s: pre_callback failed", self.camera)
            self._failure = exc

    def _luma_pts(self, request: Any) -> int:
        ns = request.get_metadata().get("SensorTimestamp")
        us = (time.monotonic_ns() if ns is None else int(ns)) // 1000  # as the encoder rounds
        if self._first_us is None:
            self._first_us = us
        return us - self._first_us

    def _on_packet(self, data: bytes, keyframe: bool, timestamp: int | None) -> None:
        """Called by the encoder's output (its own thread) for every encoded frame."""
        with self._lock:
            pts = self._last_pts + 1 if timestamp is None else int(timestamp)
            self._last_pts = pts
            self._last_frame = time.monotonic()
            data = self._sets.fix(data, keyframe)
        self.emit(EncodedPacket(self.camera, data, pts, MICROSECONDS, keyframe))
