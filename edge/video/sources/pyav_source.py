"""IP cameras (RTSP), files and V4L2/USB cameras through PyAV (FFmpeg).

RTSP and files: the camera's H.264 packets are passed through untouched, only converted to
Annex-B when the container stores them length-prefixed (MP4, Matroska: FFmpeg's
``h264_mp4toannexb`` filter, which also puts SPS/PPS in front of keyframes). RTSP, AVI and
raw H.264 are already Annex-B; a keyframe that still lacks SPS/PPS (cameras that send them
only in the SDP) gets the last ones seen prepended. Analysis frames come from the
``substream_url`` when there is one (cheap: a small stream, decoded in its own thread);
otherwise the main stream is decoded in a thread fed through a bounded backlog, and when the
decoder cannot keep up it skips to the next keyframe, so decoding costs at most one core and
never delays the packets.

V4L2 cameras give raw pictures: privacy masks are burned in and we encode them ourselves
(:class:`~edge.video.sources.synthetic.FrameEncoder`, the synthetic camera's encoder).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
import urllib.parse
from fractions import Fraction
from typing import Any

import av
import av.bitstream
import av.error
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
from edge.video.sources.synthetic import FrameEncoder, ParameterSets, is_annexb

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0  # no data this long: the camera is lost, reconnect
DECODE_BACKLOG = 32  # packets waiting for the analysis decoder before it skips a GOP
_Y_FIRST = re.compile(r"^(yuv|yuvj|nv|gray)")


def redact(url: str) -> str:
    """The url without its password, for logs and reasons (rtsp://user:***@host/...)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def open_container(url: str, fmt: str | None = None, options: dict[str, str] | None = None) -> Any:
    """av.open with bounded open/read timeouts; failures become a :class:`SourceError`."""
    opts = dict(options or {})
    if url.startswith(("rtsp://", "rtsps://")):
        # TCP: no UDP loss behind NAT / 4G; FFmpeg's socket timeout is in microseconds.
        opts.setdefault("rtsp_transport", "tcp")
        opts.setdefault("timeout", str(int(READ_TIMEOUT_S * 1_000_000)))
    try:
        return av.open(url, format=fmt, options=opts, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
    except av.error.FFmpegError as exc:
        raise SourceError(f"cannot open {redact(url)}: {exc.strerror or exc}") from exc


def frame_luma(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The Y plane of a decoded frame, as a view when the format allows (no conversion)."""
    if _Y_FIRST.match(frame.format.name):
        plane = frame.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        return rows[: frame.height, : frame.width]
    return np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)


def video_stream(container: Any, url: str) -> Any:
    if not container.streams.video:
        raise SourceError(f"{redact(url)} has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context.name != "h264":
        raise SourceError(
            f"{redact(url)} sends {stream.codec_context.name}, not H.264: set the camera's "
            "encoder (or this stream profile) to H.264"
        )
    return stream


class AnnexB:
    """Converts one stream's packets to Annex-B with SPS/PPS in front of every keyframe."""

    def __init__(self, stream: Any) -> None:
        extradata = bytes(stream.codec_context.extradata or b"")
        self.filtered = extradata[:1] == b"\x01"  # an avcC record: length-prefixed packets
        self._bsf = (
            av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
            if self.filtered
            else None
        )
        self._sets = ParameterSets(extradata if is_annexb(extradata) else b"")

    def convert(self, packet: Any) -> list[tuple[bytes, bool, int | None]]:
        """(data, keyframe, pts) for each output packet; ``packet`` None flushes."""
        if self._bsf is not None:
            outs = self._bsf.filter(packet)
        elif packet is None:
            outs = []
        else:
            outs = [packet]
        result = []
        for p in outs:
            if p.size == 0:
                continue
            data = self._sets.fix(bytes(p), bool(p.is_keyframe))
            result.append((data, bool(p.is_keyframe), p.pts if p.pts is not None else p.dts))
        return result


class LumaDecoder:
    """Decodes packets to analysis frames in its own thread, behind a bounded backlog."""

    def __init__(self, source: ThreadedSource, rows: int, *, block: bool) -> None:
        self._source = source
        self._rows = rows
        self._block = block
        self._ctx = av.CodecContext.create("h264", "r")
        self._backlog: queue.Queue[tuple[bytes, int, Fraction] | None] = queue.Queue(DECODE_BACKLOG)
        self._skipping = False
        self._halt = threading.Event()
        self._error: BaseException | None = None
        self.skipped = 0
        self._thread = threading.Thread(target=self._run, name=f"decode-{source.camera}")
        self._thread.start()

    def feed(self, data: bytes, keyframe: bool, pts: int, time_base: Fraction) -> None:
        """Queue a packet; a live stream skips to the next keyframe when the decoder lags."""
        if self._skipping and not keyframe:
            self.skipped += 1
            return
        self._skipping = False
        if not self._put((data, pts, time_base)):
            self._skipping = True
            self.skipped += 1

    def finish(self) -> None:
        """Decode what is queued, then stop (the end of a file)."""
        self._put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._halt.set()
        with contextlib.suppress(queue.Full):  # full: the thread sees _halt after one more
            self._backlog.put_nowait(None)
        self._thread.join()

    def _put(self, item: tuple[bytes, int, Fraction] | None) -> bool:
        """False when full and not blocking; raises if the decoder thread died."""
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._backlog.put(item, block=self._block, timeout=0.5 if self._block else None)
                return True
            except queue.Full:
                if not self._block:
                    return False

    def _run(self) -> None:
        try:
            self._decode_all()
        except Exception as exc:  # a bug: re-raised in the session thread by _put / finish
            log.exception("camera %s: analysis decoder failed", self._source.camera)
            self._error = exc

    def _decode_all(self) -> None:
        stride = 0
        while not self._halt.is_set():
            item = self._backlog.get()
            packet = None
            if item is not None:
                packet = av.Packet(item[0])
                packet.pts, packet.time_base = item[1], item[2]
            try:
                frames = self._ctx.decode(packet)
            except av.error.FFmpegError as exc:  # a damaged packet: skip it, keep going
                log.debug("camera %s: undecodable packet: %s", self._source.camera, exc)
                frames = []
            for frame in frames:
                y = frame_luma(frame)
                stride = stride or analysis_stride(y.shape[0], self._rows)
                tb = frame.time_base or (item[2] if item else Fraction(1, 90000))
                self._source.emit(luma_frame(self._source.camera, y, frame.pts or 0, tb, stride))
            if item is None:
                return


class PyAVSource(ThreadedSource):
    """An RTSP camera (live) or a file (played at its own pace unless ``realtime=False``)."""

    def __init__(
        self, cam: Camera, *, realtime: bool = True, backoff: tuple[float, float] = BACKOFF
    ) -> None:
        self.live = cam.source == "rtsp"
        super().__init__(cam.id, live=self.live, backoff=backoff)
        self.cam = cam
        self.realtime = realtime and not self.live
        self.decoder_skipped = 0
        if cam.privacy_masks:
            log.warning(
                "camera %s: privacy masks cannot be burned into a passed-through stream; "
                "set them in the camera's own configuration",
                cam.id,
            )

    def _session(self) -> bool:
        container = open_container(self.cam.url)
        sub: SubstreamReader | None = None
        decoder: LumaDecoder | None = None
        try:
            stream = video_stream(container, self.cam.url)
            if self.cam.substream_url:
                sub = SubstreamReader(self, self.cam.substream_url, self.cam.motion.analysis_rows)
            else:
                decoder = LumaDecoder(self, self.cam.motion.analysis_rows, block=not self.live)
            ended = self._pump(container, stream, decoder)
            if ended and decoder is not None:
                decoder.finish()
                decoder = None
        finally:
            if decoder is not None:
                decoder.stop()
            if sub is not None:
                sub.stop()
            container.close()
        if not ended:
            return False
        if self.live:
            raise SourceError(f"{redact(self.cam.url)} ended the stream")
        return True

    def _pump(self, container: Any, stream: Any, decoder: LumaDecoder | None) -> bool:
        """Demux to the end (True) or until stopped (False)."""
        annexb = AnnexB(stream)
        tb = Fraction(stream.time_base)
        self.queue.restart()
        clock: tuple[float, float] | None = None
        last_pts = -1
        for packet in container.demux(stream):
            if self._stop.is_set():
                return False
            for data, key, pts in annexb.convert(packet if packet.size else None):
                pts = last_pts + 1 if pts is None else pts
                last_pts = pts
                if self.realtime:
                    clock = self._pace(clock, float(pts * tb))
                self.emit(EncodedPacket(self.camera, data, pts, tb, key))
                if decoder is not None:
                    decoder.feed(data, key, pts, tb)
        if decoder is not None:
            self.decoder_skipped = decoder.skipped
        return not self._stop.is_set()

    def _pace(self, clock: tuple[float, float] | None, t: float) -> tuple[float, float]:
        """Wait until media time ``t`` is due against (media, wall) of the first packet."""
        if clock is None:
            return (t, time.monotonic())
        due = clock[1] + (t - clock[0])
        self._stop.wait(max(0.0, due - time.monotonic()))
        return clock


class SubstreamReader:
    """Decodes an RTSP sub-stream for analysis, reconnecting on its own with backoff."""

    def __init__(self, source: ThreadedSource, url: str, rows: int) -> None:
        self._source, self._url, self._rows = source, url, rows
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sub-{source.camera}")
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join()

    def _run(self) -> None:
        delay = self._source.backoff[0]
        while not self._halt.is_set():
            try:
                self._read()
                delay = self._source.backoff[0]
            except (SourceError, av.error.FFmpegError, OSError) as exc:
                log.warning("camera %s: analysis sub-stream: %s", self._source.camera, exc)
                delay = min(self._source.backoff[1], delay * 2)
            self._halt.wait(delay)

    def _read(self) -> None:
        container = open_container(self._url)
        try:
            stream = container.streams.video[0]
            stride = 0
            for frame in container.decode(stream):
                if self._halt.is_set():
                    return
                y = frame_luma(frame)
                stride = stride or analysis_stride(y.shape[0], self._rows)
                tb = frame.time_base or Fraction(stream.time_base)
                luma = luma_frame(self._source.camera, y, frame.pts or 0, tb, stride)
                self._source.emit(luma, up=False)  # the main stream decides up / down
        finally:
            container.close()


class V4L2Source(ThreadedSource):
    """A USB / V4L2 camera: raw pictures, masked, then encoded by us.

    ``input_format`` is FFmpeg's demuxer ("v4l2"); tests pass "lavfi" with a test pattern.
    """

    def __init__(
        self,
        cam: Camera,
        *,
        input_format: str = "v4l2",
        live: bool = True,
        hardware: bool = True,
        backoff: tuple[float, float] = BACKOFF,
    ) -> None:
        super().__init__(cam.id, live=live, backoff=backoff)
        self.cam, self.input_format, self.live, self.hardware = cam, input_format, live, hardware
        self.encoder_name = ""
        self._mask: npt.NDArray[np.bool_] | None = None
        self._stride = 1

    def _session(self) -> bool:
        cam = self.cam
        options = {}
        if self.input_format == "v4l2":
            options = {"video_size": f"{cam.width}x{cam.height}", "framerate": str(cam.fps)}
        container = open_container(cam.url, self.input_format, options)
        encoder: FrameEncoder | None = None
        try:
            stream = container.streams.video[0]
            for n, frame in enumerate(container.decode(stream)):
                if self._stop.is_set():
                    return False
                if encoder is None:
                    encoder = self._start_encoder(frame.width, frame.height)
                self._picture(frame, n, encoder)
        finally:
            container.close()
        if self.live:
            raise SourceError(f"{cam.url} stopped delivering pictures")
        return True

    def _start_encoder(self, width: int, height: int) -> FrameEncoder:
        cam = self.cam
        encoder = FrameEncoder(
            self.camera, width, height, cam.fps, cam.gop_s, hardware=self.hardware
        )
        self.encoder_name = encoder.name
        self._mask = privacy_mask(cam.privacy_masks, encoder.width, encoder.height)
        self._stride = analysis_stride(encoder.height, cam.motion.analysis_rows)
        self.queue.restart()
        return encoder

    def _picture(self, frame: av.VideoFrame, n: int, encoder: FrameEncoder) -> None:
        w, h = encoder.width, encoder.height
        picture = frame.reformat(width=w, height=h, format="yuv420p").to_ndarray()
        img = np.asarray(picture, dtype=np.uint8)
        burn_i420(img, self._mask, w, h)
        self.emit(luma_frame(self.camera, img[:h], n, encoder.time_base, self._stride))
        for packet in encoder.encode(img, n):
            self.emit(packet)
