"""A working fake of the part of picamera2 that edge uses, written from its documentation and
source (raspberrypi/picamera2: picamera2.py, request.py, encoders/encoder.py,
encoders/h264_encoder.py, outputs/output.py).

It is not a mock: a camera thread produces real frames (planar YUV420 with a padded stride,
as libcamera gives), calls ``pre_callback(request)`` under the camera lock, then hands the
*same buffer* to the running encoders, which encode it to real H.264 with libx264 (PyAV) and
call ``output.outputframe(frame, keyframe, timestamp, packet, audio)`` as picamera2's
encoders do (Annex-B bytes; timestamps in microseconds from the first frame, taken from the
request's ``SensorTimestamp``; SPS/PPS on every keyframe only with ``repeat=True``). So a
test can prove that what a pre_callback writes is what gets encoded.

Covered: ``Picamera2(camera_num)`` (IndexError without a camera, as ``global_camera_info()``
indexing gives), ``create_video_configuration`` (main / lores / controls / encode, defaults
and even-size alignment), ``configure`` (lores must be YUV and not exceed main; stride),
``start`` / ``stop`` / ``close``, ``start_encoder`` / ``stop_encoder``, ``pre_callback``,
``capture_array(name)``, ``MappedArray(request, stream)``, ``request.get_metadata()``,
``encoders.H264Encoder(bitrate, repeat, iperiod, ...)``, ``outputs.Output``. Only the YUV420
format is implemented (a RuntimeError says so for others). Unlike the real encoder (a V4L2
device polled by its own thread) this one encodes synchronously in the camera thread.

Test knobs live on :class:`World` (``Picamera2.world``): the scene, how many cameras are
attached, and after how many frames the camera stalls (stops delivering).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import types
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

SceneFn = Callable[[int, int, int], np.ndarray]  # (frame index, width, height) -> (h*3/2, w)


def default_scene(index: int, width: int, height: int) -> np.ndarray:
    """A bright textured picture with a moving bar, planar YUV 4:2:0."""
    yy, xx = np.mgrid[0:height, 0:width]
    y = 120 + 60 * (((xx // 8) + (yy // 8)) % 2) + 10 * np.sin((xx + 4 * index) / 9.0)
    uv = np.full((height // 2, width), 128, dtype=np.uint8)
    return np.concatenate([np.clip(y, 0, 255).astype(np.uint8), uv])


@dataclasses.dataclass
class World:
    cameras: int = 1
    scene: SceneFn = default_scene
    stall_after: int | None = None  # frames, per opened camera
    pace: bool = True  # deliver at the configured frame rate
    opened: int = 0  # how many Picamera2 objects were created (reconnections)


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _yuv_array(buf: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """picamera2's _make_array_shared for YUV420: (h*3/2, stride), sharing the buffer."""
    _, h = cfg["size"]
    return buf.reshape((h * 3 // 2, cfg["stride"]))


class _Request:
    """What picamera2 calls a CompletedRequest: buffers per stream, config, metadata."""

    def __init__(self, picam2: Picamera2, buffers: dict[str, np.ndarray], ts_ns: int) -> None:
        self.picam2 = picam2
        self.config = dict(picam2.camera_config)
        self._buffers = buffers
        self._metadata = {"SensorTimestamp": ts_ns, "FrameDuration": picam2._frame_us}

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def make_array(self, name: str) -> np.ndarray:
        if self.config.get(name) is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        with MappedArray(self, name) as m:
            return np.copy(m.array)

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


class MappedArray:
    def __init__(self, request: _Request, stream: str, reshape: bool = True, write: bool = True):
        self._request, self._stream, self._reshape, self._write = request, stream, reshape, write
        self._array: np.ndarray | None = None

    def __enter__(self) -> MappedArray:
        buf = self._request._buffers[self._stream]
        if not self._write:
            buf = buf.view()
            buf.setflags(write=False)
        cfg = self._request.config[self._stream]
        self._array = _yuv_array(buf, cfg) if self._reshape else buf
        return self

    def __exit__(self, *exc: object) -> None:
        self._array = None

    @property
    def array(self) -> np.ndarray | None:
        return self._array


class Output:
    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.ptsoutput = pts
        self.needs_pacing = False
        self.needs_add_stream = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: Any = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        pass

    def _add_stream(self, encoder_stream: Any, *args: Any, **kwargs: Any) -> None:
        pass


class H264Encoder:
    def __init__(
        self,
        bitrate: int | None = None,
        repeat: bool = True,
        iperiod: int | None = None,
        framerate: float | None = None,
        enable_sps_framerate: bool = False,
        qp: int | None = None,
        profile: str | None = None,
    ) -> None:
        self.bitrate, self.repeat, self.iperiod = bitrate, repeat, iperiod
        self.framerate, self.qp, self.profile = framerate, qp, profile
        self._output: list[Output] = []
        self._running = False
        self._lock = threading.Lock()
        self.width = self.height = self.stride = 0
        self.format = ""
        self.name = "main"
        self.firsttimestamp: int | None = None

    @property
    def output(self) -> Any:
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value: Any) -> None:
        outs = value if isinstance(value, list) else [value]
        if not all(isinstance(o, Output) for o in outs):
            raise RuntimeError("Must pass Output")
        self._output = outs

    @property
    def running(self) -> bool:
        return self._running

    def start(self, quality: Any = None) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            if self.format != "YUV420":
                raise RuntimeError(f"fake H264Encoder handles YUV420 only, not {self.format}")
            ctx = av.CodecContext.create("libx264", "w")
            ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
            ctx.time_base = Fraction(1, 1_000_000)
            ctx.gop_size = self.iperiod or 60
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "x264-params": f"scenecut=0:keyint={ctx.gop_size}:min-keyint={ctx.gop_size}",
            }
            self._ctx, self._sent_headers = ctx, False
            self.firsttimestamp = None
            self._running = True
            for out in self._output:
                out.start()

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            for out in self._output:
                out.stop()

    def encode(self, stream: str, request: _Request) -> None:
        with self._lock:
            if not self._running:
                return
            ts = request.get_metadata()["SensorTimestamp"] // 1000
            self.firsttimestamp = ts if self.firsttimestamp is None else self.firsttimestamp
            with MappedArray(request, stream, write=False) as m:
                w, h, s = self.width, self.height, self.stride
                flat = m.array.reshape(-1)
                y = flat[: s * h].reshape(h, s)[:, :w]
                c = flat[s * h :].reshape(h, s // 2)[:, : w // 2].reshape(h // 2, w)
                i420 = np.ascontiguousarray(np.concatenate([y, c]))
            frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
            frame.pts = ts - self.firsttimestamp
            for p in self._ctx.encode(frame):
                self.outputframe(self._headers(bytes(p), p.is_keyframe), p.is_keyframe, p.pts)

    def _headers(self, data: bytes, keyframe: bool) -> bytes:
        """repeat=False: SPS/PPS only in front of the first keyframe, as the SoC encoder."""
        if not keyframe:
            return data
        if self.repeat or not self._sent_headers:
            self._sent_headers = True
            return data
        idr = data.find(b"\x00\x00\x01\x65")  # the first IDR slice, after SPS/PPS/SEI
        return data[idr:] if idr > 0 else data

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: Any = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        for out in self._output:
            out.outputframe(frame, keyframe, timestamp, packet, audio)


class Picamera2:
    world = World()

    def __init__(
        self,
        camera_num: int = 0,
        verbose_console: Any = None,
        tuning: Any = None,
        allocator: Any = None,
    ) -> None:
        if camera_num >= self.world.cameras:
            raise IndexError("list index out of range")  # global_camera_info()[camera_num]
        self.world.opened += 1
        self.camera_num = camera_num
        self.camera_config: dict[str, Any] = {}
        self.pre_callback: Callable[[_Request], None] | None = None
        self.post_callback: Callable[[_Request], None] | None = None
        self.encode_stream_name = "main"
        self.lock = threading.RLock()
        self._encoders: set[H264Encoder] = set()
        self._completed: list[_Request] = []
        self._new_frame = threading.Condition(self.lock)
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._closed = False
        self._frame_us = 33333
        self.frames = 0

    # -- configuration -----------------------------------------------------------------------
    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("Camera not opened")
        main_cfg = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True, **(main or {})}
        main_cfg["size"] = self._even(main_cfg["size"])
        lores_cfg = None
        if lores is not None:
            lores_cfg = {"format": "YUV420", "size": main_cfg["size"], **lores}
            lores_cfg["size"] = self._even(lores_cfg["size"])
        ctrls = {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333), **(controls or {})}
        return {
            "use_case": use_case,
            "transform": transform,
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main_cfg,
            "lores": lores_cfg,
            "raw": raw,
            "controls": ctrls,
            "sensor": sensor,
            "display": display,
            "encode": encode,
        }

    @staticmethod
    def _even(size: tuple[int, int]) -> tuple[int, int]:
        return (size[0] - size[0] % 2, size[1] - size[1] % 2)  # align_stream(optimal=False)

    def configure(self, camera_config: dict[str, Any] | None = None) -> None:
        if not isinstance(camera_config, dict):
            raise RuntimeError("fake Picamera2 takes a configuration dict only")
        config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in camera_config.items()}
        main, lores = config["main"], config.get("lores")
        for name, stream in (("main", main), ("lores", lores)):
            if stream is None:
                continue
            if stream["format"] != "YUV420":
                raise RuntimeError(f"fake Picamera2 implements YUV420 only ({name})")
            stream["stride"] = _align(stream["size"][0], 64)
        if lores is not None and (
            lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]
        ):
            raise RuntimeError("lores stream dimensions may not exceed main stream")
        ctrls = config.get("controls") or {}
        if "FrameRate" in ctrls:
            self._frame_us = int(1_000_000 / ctrls["FrameRate"])
        elif "FrameDurationLimits" in ctrls:
            self._frame_us = int(ctrls["FrameDurationLimits"][0])
        self.encode_stream_name = config.get("encode") or "main"
        self.camera_config = config

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    # -- running -----------------------------------------------------------------------------
    def start(self, config: dict[str, Any] | None = None, show_preview: bool = False) -> None:
        if config is not None:
            self.configure(config)
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        if self._running.is_set():
            return
        self._running.set()
        self._thread = threading.Thread(target=self._loop, name="fake-picamera2", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def close(self) -> None:
        self.stop()
        self._closed = True

    def start_encoder(
        self,
        encoder: H264Encoder | None = None,
        output: Any = None,
        pts: Any = None,
        quality: Any = None,
        name: str | None = None,
    ) -> None:
        if encoder is None:
            raise RuntimeError("No encoder specified")
        if output is not None:
            encoder.output = output
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        name = name or self.encode_stream_name
        stream = self.camera_config.get(name)
        if stream is None:
            raise RuntimeError(f"Encode stream {name} was not defined")
        encoder.name = name
        encoder.width, encoder.height = stream["size"]
        encoder.format, encoder.stride = stream["format"], stream["stride"]
        encoder.start(quality=quality)
        with self.lock:
            self._encoders.add(encoder)

    def stop_encoder(self, encoders: Any = None) -> None:
        chosen = list(self._encoders) if encoders is None else [encoders]
        for enc in chosen:
            enc.stop()
        with self.lock:
            self._encoders.difference_update(chosen)

    def capture_array(
        self, name: str = "main", wait: Any = None, signal_function: Any = None
    ) -> Any:
        with self._new_frame:
            if not self._new_frame.wait_for(lambda: bool(self._completed), timeout=5):
                raise TimeoutError("no frame from the fake camera within 5 s")
            request = self._completed.pop(0)
        return request.make_array(name)

    # -- the camera thread -------------------------------------------------------------------
    def _loop(self) -> None:
        start = time.monotonic()
        while self._running.is_set():
            stall = self.world.stall_after
            if stall is not None and self.frames >= stall:
                time.sleep(0.01)  # the sensor stopped: no more requests complete
                continue
            request = self._capture(self.frames)
            with self.lock:
                if self.pre_callback:
                    self.pre_callback(request)
                for enc in list(self._encoders):
                    enc.encode(enc.name, request)
                self._completed = [*self._completed[-1:], request]  # a small queue, as libcamera
                self._new_frame.notify_all()
            self.frames += 1
            if self.world.pace:
                due = start + self.frames * self._frame_us / 1e6
                time.sleep(max(0.0, due - time.monotonic()))

    def _capture(self, index: int) -> _Request:
        main = self.camera_config["main"]
        w, h = main["size"]
        picture = self.world.scene(index, w, h)
        buffers = {"main": self._buffer(picture, w, h, main["stride"])}
        lores = self.camera_config.get("lores")
        if lores is not None:  # the ISP scales the same picture down
            lw, lh = lores["size"]
            rows, cols = np.arange(lh) * h // lh, np.arange(lw) * w // lw
            y = picture[:h][rows][:, cols]
            c = picture[h:].reshape(2, h // 2, w // 2)[:, rows[::2] // 2][:, :, cols[::2] // 2]
            small = np.concatenate([y.reshape(-1), c.reshape(-1)]).reshape(lh * 3 // 2, lw)
            buffers["lores"] = self._buffer(small, lw, lh, lores["stride"])
        ts_ns = time.monotonic_ns() if self.world.pace else index * self._frame_us * 1000
        return _Request(self, buffers, ts_ns)

    @staticmethod
    def _buffer(picture: np.ndarray, w: int, h: int, stride: int) -> np.ndarray:
        """A flat camera buffer with padded rows (stride), planes laid out as libcamera's."""
        buf = np.zeros(stride * h * 3 // 2, dtype=np.uint8)
        buf[: stride * h].reshape(h, stride)[:, :w] = picture[:h]
        c_src = picture[h:].reshape(h, w // 2)  # U rows then V rows, w/2 wide
        buf[stride * h :].reshape(h, stride // 2)[:, : w // 2] = c_src
        return buf


def install(monkeypatch: pytest.MonkeyPatch, world: World | None = None) -> World:
    """Put the fake in sys.modules as picamera2, picamera2.encoders, picamera2.outputs."""
    world = world or World()
    monkeypatch.setattr(Picamera2, "world", world)
    root = types.ModuleType("picamera2")
    root.Picamera2, root.MappedArray = Picamera2, MappedArray  # type: ignore[attr-defined]
    encoders = types.ModuleType("picamera2.encoders")
    encoders.H264Encoder = H264Encoder  # type: ignore[attr-defined]
    outputs = types.ModuleType("picamera2.outputs")
    outputs.Output = Output  # type: ignore[attr-defined]
    root.encoders, root.outputs = encoders, outputs  # type: ignore[attr-defined]
    for name, module in (
        ("picamera2", root),
        ("picamera2.encoders", encoders),
        ("picamera2.outputs", outputs),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    return world
