"""The synthetic camera (hw-sim, demo, tests) and the H.264 encoder of sources we encode.

A :class:`SyntheticSource` renders a scripted scene (:mod:`edge.video.sources.scenes`),
burns the privacy masks in, takes the analysis frame from the same picture, and encodes it
with libx264 exactly as a V4L2 camera is encoded (:class:`FrameEncoder`): ultrafast,
zerolatency, baseline profile, one keyframe every ``fps * gop_s`` frames, Annex-B with
SPS/PPS in front of every keyframe. It paces itself to ``fps`` unless ``realtime=False``
(tests): then it runs as fast as the consumer takes frames, on the scene's own clock.

Annex-B facts this relies on, verified with PyAV 18 / FFmpeg 8: a bare libx264
``CodecContext`` (no global-header flag) emits Annex-B with SPS and PPS before every IDR
(FFmpeg sets x264's repeat-headers in that case; we set it as well); a hardware encoder may
not, so :class:`ParameterSets` puts the last ones seen in front of a keyframe lacking them.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from typing import cast

import av
import av.error
import numpy as np
import numpy.typing as npt

from edge.config.video import Camera
from edge.video.frames import EncodedPacket, nal_units
from edge.video.masks import burn_i420, privacy_mask
from edge.video.sources.base import (
    BACKOFF,
    SourceError,
    ThreadedSource,
    analysis_stride,
    luma_frame,
)
from edge.video.sources.scenes import Scene

log = logging.getLogger(__name__)

START_CODE = b"\x00\x00\x00\x01"
NAL_SPS, NAL_PPS, NAL_IDR = 7, 8, 5
LOSS_DETECT_S = 1.0  # a scripted loss is reported after this much silence, as a read timeout


def is_annexb(data: bytes) -> bool:
    return data.startswith((b"\x00\x00\x01", START_CODE))


def nal_types(data: bytes) -> list[int]:
    return [u[0] & 0x1F for u in nal_units(data) if u]


class ParameterSets:
    """Keeps the last SPS/PPS seen; puts them in front of a keyframe that lacks them.

    A decoder joining at any keyframe (a clip's first frame, a live viewer) needs them.
    """

    def __init__(self, extradata: bytes = b"") -> None:
        self._sets = self._extract(extradata) if is_annexb(extradata) else b""
        self.prepended = 0

    @staticmethod
    def _extract(data: bytes) -> bytes:
        units = [u for u in nal_units(data) if u and u[0] & 0x1F in (NAL_SPS, NAL_PPS)]
        return b"".join(START_CODE + u for u in units)

    def fix(self, data: bytes, keyframe: bool) -> bytes:
        if not keyframe:
            return data
        types = set(nal_types(data))
        if NAL_SPS in types and NAL_PPS in types:
            self._sets = self._extract(data)
            return data
        if self._sets:
            self.prepended += 1
            return self._sets + data
        return data


def bitrate_kbps(width: int, height: int, fps: int) -> int:
    """A cap for a surveillance picture: ~0.12 bit per pixel per frame, at least 200 kb/s."""
    return max(200, width * height * fps * 12 // 100_000)


class FrameEncoder:
    """H.264 for sources that hand us raw pictures (planar YUV 4:2:0 arrays).

    ``hardware=True`` tries the SoC encoder (``h264_v4l2m2m``: Raspberry Pi 4) first and falls
    back to libx264 when it is absent or refuses the settings.
    """

    def __init__(
        self, camera: str, width: int, height: int, fps: int, gop_s: float, *, hardware: bool
    ) -> None:
        self.camera = camera
        self.width, self.height = width - width % 2, height - height % 2
        self.fps = fps
        self.gop = max(1, round(fps * gop_s))
        self.time_base = Fraction(1, fps)
        names = ("h264_v4l2m2m", "libx264") if hardware else ("libx264",)
        self._ctx = self._open(names)
        self.name: str = self._ctx.name
        self._sets = ParameterSets(bytes(self._ctx.extradata or b""))  # if the encoder has any

    def _open(self, names: tuple[str, ...]) -> av.VideoCodecContext:
        problems = []
        for name in names:
            ctx = cast(av.VideoCodecContext, av.CodecContext.create(name, "w"))
            ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
            ctx.time_base, ctx.framerate = self.time_base, Fraction(self.fps)
            ctx.gop_size = self.gop
            kbps = bitrate_kbps(self.width, self.height, self.fps)
            if name == "libx264":
                ctx.options = {
                    "preset": "ultrafast",
                    "tune": "zerolatency",
                    "profile": "baseline",
                    "x264-params": f"repeat-headers=1:scenecut=0:keyint={self.gop}:"
                    f"min-keyint={self.gop}:vbv-maxrate={kbps}:vbv-bufsize={kbps}",
                }
            else:
                ctx.bit_rate = kbps * 1000
            try:
                ctx.open()
            except (av.error.FFmpegError, ValueError) as exc:
                problems.append(f"{name}: {exc}")
                continue
            if problems:
                log.info("camera %s: encoding with %s (%s)", self.camera, name, "; ".join(problems))
            return ctx
        raise SourceError("no H.264 encoder could be opened: " + "; ".join(problems))

    def encode(self, img: npt.NDArray[np.uint8], pts: int) -> list[EncodedPacket]:
        """Encode one picture (shape (h*3/2, w)); returns the packets it completes.

        For libx264 the frame wraps ``img`` without a copy (x264 copies the picture in during
        the call), so a source that renders into one reused buffer allocates nothing per
        picture: a fresh 1.4 MB frame per 720p picture kept each camera's heap that much
        larger (glibc keeps freed blocks of that size for reuse).
        """
        if self.name == "libx264" and img.flags.c_contiguous:
            frame = av.VideoFrame.from_numpy_buffer(img, format="yuv420p")
        else:
            frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
        frame.pts, frame.time_base = pts, self.time_base
        return self._packets(self._ctx.encode(frame))

    def flush(self) -> list[EncodedPacket]:
        return self._packets(self._ctx.encode(None))

    def _packets(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        out = []
        for p in packets:
            key = bool(p.is_keyframe)
            data = self._sets.fix(bytes(p), key)
            pts = p.pts if p.pts is not None else (p.dts or 0)
            out.append(EncodedPacket(self.camera, data, pts, self.time_base, key))
        return out


class SyntheticSource(ThreadedSource):
    """A generated camera; its url names the scene and script (see scenes)."""

    def __init__(
        self, cam: Camera, *, realtime: bool = True, backoff: tuple[float, float] = BACKOFF
    ) -> None:
        super().__init__(cam.id, live=realtime, backoff=backoff)
        self.cam = cam
        self.realtime = realtime
        self.scene = Scene(cam.url, cam.width, cam.height, where=f"camera {cam.id!r}")
        self._frame = 0  # the scene's clock, in frames; it survives a reconnection

    def _session(self) -> bool:
        cam, scene = self.cam, self.scene
        w, h = scene.width, scene.height
        mask = privacy_mask(cam.privacy_masks, w, h)
        stride = analysis_stride(h, cam.motion.analysis_rows)
        tb = Fraction(1, cam.fps)
        encoder: FrameEncoder | None = None
        lost_at: float | None = None
        buf: npt.NDArray[np.uint8] | None = None  # one frame buffer: masked in place, copied out
        started = time.monotonic() - self._frame / cam.fps
        while not self._stop.is_set():
            n = self._frame
            t = n / cam.fps
            if self.realtime and self._stop.wait(max(0.0, started + t - time.monotonic())):
                break
            self._frame += 1
            img = scene.render(t, n, buf)
            if img is None:  # the script cut the camera: silence, then a loss like a timeout
                encoder = None
                lost_at = t if lost_at is None else lost_at
                if t - lost_at >= LOSS_DETECT_S:
                    self._report(
                        False, f"no picture from scene {scene.name} for {t - lost_at:.0f} s"
                    )
                continue
            lost_at, buf = None, img
            if encoder is None:  # (re)starting: a new stream that opens on a keyframe
                encoder = FrameEncoder(self.camera, w, h, cam.fps, cam.gop_s, hardware=False)
                self.queue.restart()
            burn_i420(img, mask, w, h)
            self.emit(luma_frame(self.camera, img[:h], n, tb, stride))
            for packet in encoder.encode(img, n):
                self.emit(packet)
        return False
