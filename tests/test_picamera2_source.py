"""The picamera2 source against a working fake of picamera2 (tests/support/fake_picamera2):
masks burned into main before the encoder sees it, lores analysis, keyframes with SPS/PPS,
reopening a camera that stalls or is missing, and no import of picamera2 at import time."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from typing import Any

import av
import numpy as np
import pytest
from support import fake_picamera2

from edge.config.video import Camera
from edge.video.frames import EncodedPacket, LumaFrame
from edge.video.masks import BLACK_Y
from edge.video.sources import SourceState, open_source
from edge.video.sources.picamera2_source import MICROSECONDS, Picamera2Source, lores_size
from edge.video.sources.synthetic import NAL_IDR, NAL_PPS, NAL_SPS, nal_types

TOP_LEFT = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)]


def camera(**kw: Any) -> Camera:
    # 648 wide: the fake pads rows to 64 bytes (stride 704, lores 324 -> 384), as libcamera
    base: dict[str, Any] = {"id": "pi", "source": "picamera2", "width": 648, "height": 480}
    base.update(fps=30, gop_s=0.5)
    base.update(kw)
    return Camera(**base)


async def collect(source: Any, until: Any, limit_s: float = 20.0) -> list[Any]:
    items: list[Any] = []

    async def run() -> None:
        async for item in source.packets():
            items.append(item)
            if until(items):
                return

    try:
        await asyncio.wait_for(run(), limit_s)
    finally:
        await source.close()
    return items


def n_packets(n: int) -> Any:
    return lambda items: sum(isinstance(i, EncodedPacket) for i in items) >= n


def states(items: list[Any]) -> list[tuple[bool, str]]:
    return [(i.up, i.reason) for i in items if isinstance(i, SourceState)]


def test_module_does_not_import_picamera2_at_import_time() -> None:
    code = (
        "import sys, edge.video.sources, edge.video.sources.picamera2_source; "
        "assert 'picamera2' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_picamera2_the_camera_is_down_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails, as on a non-Pi box
    src = open_source(camera())
    assert isinstance(src, Picamera2Source)
    items = asyncio.run(collect(src, lambda it: bool(states(it))))
    [(up, reason)] = states(items)
    assert not up and "python3-picamera2" in reason and "--system-site-packages" in reason


def test_masks_are_burned_into_main_before_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    world = fake_picamera2.install(monkeypatch)
    src = Picamera2Source(camera(privacy_masks=[TOP_LEFT]))
    items = asyncio.run(collect(src, n_packets(32)))
    packets = [i for i in items if isinstance(i, EncodedPacket)]
    assert world.opened == 1 and states(items)[0] == (True, "receiving video")

    ctx = av.CodecContext.create("h264", "r")  # no extradata: Annex-B, in-band SPS/PPS only
    frames = [f for p in packets for f in ctx.decode(av.Packet(p.data))]
    assert len(frames) >= 30
    for f in frames:
        y = f.to_ndarray(format="yuv420p")[:480]
        assert abs(float(y[:240, :320].mean()) - BLACK_Y) < 3  # hidden in what was encoded
        assert float(y[240:, 320:].mean()) > 100  # the fake scene is bright elsewhere


def test_keyframes_timestamps_and_lores_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_picamera2.install(monkeypatch)
    src = Picamera2Source(camera(privacy_masks=[TOP_LEFT]))
    items = asyncio.run(collect(src, n_packets(40)))
    packets = [i for i in items if isinstance(i, EncodedPacket)]
    keys = [n for n, p in enumerate(packets) if p.keyframe]
    assert keys[:3] == [0, 15, 30]  # iperiod = fps * gop_s
    for n in keys:
        types = nal_types(packets[n].data)
        assert types.index(NAL_SPS) < types.index(NAL_PPS) < types.index(NAL_IDR)
    pts = [p.pts for p in packets]
    assert pts[0] == 0 and all(b > a for a, b in itertools.pairwise(pts))
    assert packets[0].time_base == MICROSECONDS

    lumas = [i for i in items if isinstance(i, LumaFrame)]
    assert lores_size(648, 480, 176) == (324, 240)
    assert lumas[0].y.shape == (240, 324)  # the lores stream, without its stride padding
    assert (lumas[0].y[:120, :160] == BLACK_Y).all()  # analysis never sees the hidden area
    assert float(lumas[0].y[120:, 160:].mean()) > 100
    # one clock: each analysis frame has the timestamp the encoder gave the same picture
    assert [lf.pts for lf in lumas[:30]] == pts[:30]


def test_a_stalled_camera_is_lost_then_reopened(monkeypatch: pytest.MonkeyPatch) -> None:
    world = fake_picamera2.install(monkeypatch, fake_picamera2.World(stall_after=5))
    src = Picamera2Source(camera(width=320, height=240), backoff=(0.05, 0.2), stall_s=0.5)
    items = asyncio.run(
        collect(src, lambda it: len(states(it)) >= 3 and isinstance(it[-1], EncodedPacket))
    )
    (up1, _), (up2, reason), (up3, _) = states(items)
    assert (up1, up2, up3) == (True, False, True)
    assert "no frame" in reason
    assert world.opened >= 2  # a fresh Picamera2 for the new session
    after = items[[i for i, it in enumerate(items) if isinstance(it, SourceState)][2] :]
    first = next(i for i in after if isinstance(i, EncodedPacket))
    assert first.keyframe  # the new stream opens on a keyframe


def test_a_missing_camera_is_reported_until_it_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    world = fake_picamera2.install(monkeypatch, fake_picamera2.World(cameras=0))
    src = Picamera2Source(camera(width=320, height=240), backoff=(0.05, 0.2))

    def until(items: list[Any]) -> bool:
        world.cameras = 1  # plugged in after the first report
        return n_packets(3)(items)

    items = asyncio.run(collect(src, until))
    (down, reason), (up, _) = states(items)
    assert not down and up and "no Raspberry Pi camera" in reason


def test_the_fake_encodes_what_the_pre_callback_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake itself: the buffer handed to the encoder is the one pre_callback mapped."""
    fake_picamera2.install(monkeypatch, fake_picamera2.World(pace=False))
    from picamera2 import MappedArray, Picamera2  # the fake, through sys.modules
    from picamera2.encoders import H264Encoder
    from picamera2.outputs import Output

    got: list[tuple[bytes, bool, int]] = []

    class Keep(Output):  # type: ignore[misc]
        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: Any = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            got.append((frame, keyframe, timestamp))

    def paint(request: Any) -> None:
        with MappedArray(request, "main") as m:
            m.array[:240, :] = 235  # the whole Y plane, padding included

    cam = Picamera2()
    cam.configure(cam.create_video_configuration(main={"size": (328, 240), "format": "YUV420"}))
    assert cam.camera_configuration()["main"]["stride"] == 384
    cam.pre_callback = paint
    cam.start_encoder(H264Encoder(repeat=False, iperiod=5), Keep())
    cam.start()
    while len(got) < 12:
        cam.capture_array("main")
    cam.stop()
    cam.stop_encoder()
    cam.close()
    ctx = av.CodecContext.create("h264", "r")
    y = [f.to_ndarray(format="yuv420p")[:240] for d, _, _ in got for f in ctx.decode(av.Packet(d))]
    assert y and all(abs(float(p.mean()) - 235) < 3 for p in y)
    assert [k for _, k, _ in got[:11]] == [True] + [False] * 4 + [True] + [False] * 4 + [True]
    assert NAL_SPS in nal_types(got[0][0]) and NAL_SPS not in nal_types(got[5][0])  # repeat off
    assert np.diff([t for _, _, t in got]).min() > 0
