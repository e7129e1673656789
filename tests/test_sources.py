"""Camera sources: the bounded queue's drop policy, synthetic scenes encoded with libx264,
file passthrough (real footage, byte for byte), MP4 to Annex-B, V4L2 encode path, masks."""

from __future__ import annotations

import ast
import asyncio
import shutil
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from edge.config.video import Camera
from edge.errors import ConfigError
from edge.video.frames import EncodedPacket, LumaFrame
from edge.video.masks import BLACK_Y, burn_i420, polygon_mask, privacy_mask
from edge.video.sources import SourceState, open_source
from edge.video.sources.base import FrameQueue, Item, analysis_stride
from edge.video.sources.pyav_source import PyAVSource, V4L2Source, redact
from edge.video.sources.synthetic import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    ParameterSets,
    SyntheticSource,
    nal_types,
    nal_units,
)

PETS = Path("/work/shared/data/pets2009-campus-480x360.avi")
TOP_LEFT = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)]


def camera(**kw: Any) -> Camera:
    base: dict[str, Any] = {"id": "cam1", "source": "synthetic", "url": "walker"}
    base.update(width=320, height=240, fps=10, gop_s=1.0)
    base.update(kw)
    return Camera(**base)


async def collect(source: Any, until: Any, limit_s: float = 20.0) -> list[Item]:
    """Items until ``until(items)`` is true or the source ends; the source is closed."""
    items: list[Item] = []

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


def packets(items: list[Item]) -> list[EncodedPacket]:
    return [i for i in items if isinstance(i, EncodedPacket)]


def lumas(items: list[Item]) -> list[LumaFrame]:
    return [i for i in items if isinstance(i, LumaFrame)]


def states(items: list[Item]) -> list[tuple[bool, str]]:
    return [(i.up, i.reason) for i in items if isinstance(i, SourceState)]


def decode(pkts: list[EncodedPacket]) -> list[np.ndarray]:
    """Y planes (as coded, video range) decoded by a fresh decoder that has no extradata:
    this works only if the stream is Annex-B with its parameter sets in-band."""
    ctx = av.CodecContext.create("h264", "r")
    frames = [f for p in pkts for f in ctx.decode(av.Packet(p.data))] + ctx.decode(None)
    return [f.to_ndarray(format="yuv420p")[: f.height] for f in frames]


def count_frames(n: int) -> Any:
    return lambda items: len(packets(items)) >= n


# -- the bounded queue ---------------------------------------------------------------------


def pkt(pts: int, key: bool = False) -> EncodedPacket:
    return EncodedPacket(
        "c", b"\x00\x00\x00\x01" + bytes([0x65 if key else 0x41]), pts, Fraction(1, 10), key
    )


def luma(pts: int) -> LumaFrame:
    return LumaFrame("c", pts, Fraction(1, 10), np.zeros((2, 2), np.uint8))


async def drain(queue: FrameQueue) -> list[Item]:
    queue.finish()
    out = []
    while (item := await queue.get()) is not None:
        out.append(item)
    return out


def test_full_queue_drops_the_oldest_luma_before_any_packet() -> None:
    async def main() -> list[Item]:
        q = FrameQueue("c", capacity=4)
        q.bind(asyncio.get_running_loop())
        for item in (pkt(0, True), luma(0), pkt(1), luma(1), pkt(2), luma(2)):
            q.put(item)
        assert q.stats.dropped_luma == 2 and q.stats.dropped_packets == 0
        return await drain(q)

    got = asyncio.run(main())
    assert [(type(i).__name__, i.pts) for i in got] == [
        ("EncodedPacket", 0),
        ("EncodedPacket", 1),
        ("EncodedPacket", 2),
        ("LumaFrame", 2),
    ]


def test_full_of_packets_drops_up_to_the_next_keyframe_so_it_stays_decodable() -> None:
    async def main() -> tuple[list[Item], int]:
        q = FrameQueue("c", capacity=5)
        q.bind(asyncio.get_running_loop())
        for item in (pkt(0, True), pkt(1), pkt(2), pkt(3, True), pkt(4), pkt(5)):
            q.put(item)
        return await drain(q), q.stats.dropped_packets

    got, dropped = asyncio.run(main())
    assert [(i.pts, i.keyframe) for i in packets(got)] == [(3, True), (4, False), (5, False)]
    assert dropped == 3


def test_without_a_queued_keyframe_packets_are_refused_until_the_next_one() -> None:
    async def main() -> tuple[list[Item], int]:
        q = FrameQueue("c", capacity=3)
        q.bind(asyncio.get_running_loop())
        q.put(SourceState("c", True, "up"))
        for item in (pkt(0, True), pkt(1), pkt(2), pkt(3), pkt(4, True), pkt(5)):
            q.put(item)
        return await drain(q), q.stats.dropped_packets

    got, dropped = asyncio.run(main())
    assert isinstance(got[0], SourceState)  # state changes are never dropped for packets
    assert [(i.pts, i.keyframe) for i in packets(got)] == [(4, True), (5, False)]
    assert dropped == 4


def test_a_blocking_queue_waits_for_the_consumer_and_loses_nothing() -> None:
    async def main() -> list[Item]:
        q = FrameQueue("c", capacity=2, block=True)
        q.bind(asyncio.get_running_loop())

        def produce() -> None:
            for n in range(50):
                q.put(pkt(n, n % 10 == 0))
            q.finish()

        threading.Thread(target=produce).start()
        out = []
        while (item := await q.get()) is not None:
            out.append(item)
        return out

    got = asyncio.run(main())
    assert [i.pts for i in packets(got)] == list(range(50))


# -- synthetic -----------------------------------------------------------------------------


def test_synthetic_stream_is_annexb_baseline_with_sps_pps_on_every_keyframe() -> None:
    cam = camera(width=640, height=360, fps=10, gop_s=1.0)
    items = asyncio.run(collect(SyntheticSource(cam, realtime=False), count_frames(35)))
    pk = packets(items)
    assert states(items)[0] == (True, "receiving video")
    assert all(p.data.startswith(b"\x00\x00\x00\x01") for p in pk)
    assert [p.pts for p in pk if p.keyframe] == [0, 10, 20, 30]  # GOP = fps * gop_s
    for p in pk:
        types = nal_types(p.data)
        assert (NAL_IDR in types) == p.keyframe
        if p.keyframe:
            assert types.index(NAL_SPS) < types.index(NAL_PPS) < types.index(NAL_IDR)
    sps = next(u for u in nal_units(pk[0].data) if u[0] & 0x1F == NAL_SPS)
    assert sps[1] == 66  # profile_idc: baseline
    assert len(decode(pk)) == len(pk)
    lf = lumas(items)
    assert lf[0].y.shape == (180, 320)  # 360 rows / stride 2: about analysis_rows
    assert lf[0].time_base == Fraction(1, 10)


def test_privacy_mask_is_burned_in_before_encoding_and_analysis() -> None:
    cam = camera(url="walker", privacy_masks=[TOP_LEFT])
    items = asyncio.run(collect(SyntheticSource(cam, realtime=False), count_frames(12)))
    for y in decode(packets(items)):
        assert abs(float(y[:120, :160].mean()) - BLACK_Y) < 3  # hidden, after compression
        assert float(y[120:, 160:].mean()) > 60  # the rest is the scene
    for lf in lumas(items):
        assert (lf.y[:120, :160] == BLACK_Y).all()


def test_lost_scene_reports_loss_and_return_and_restarts_on_a_keyframe() -> None:
    cam = camera(url="lost?at=1&for=3")
    src = SyntheticSource(cam, realtime=False)
    items = asyncio.run(collect(src, lambda it: len(states(it)) == 3 and len(packets(it)) > 15))
    up, down, back = states(items)
    assert up[0] and not down[0] and back[0]
    assert "no picture" in down[1]
    i_back = [i for i, it in enumerate(items) if isinstance(it, SourceState)][2]
    first = packets(items[i_back:])[0]
    assert first.keyframe and NAL_SPS in nal_types(first.data)
    assert first.seconds >= 4.0  # the scene's clock ran on through the loss


def test_realtime_synthetic_is_paced_to_its_frame_rate() -> None:
    cam = camera(fps=20)
    start = time.monotonic()
    asyncio.run(collect(SyntheticSource(cam), count_frames(11)))
    assert time.monotonic() - start >= 0.45  # frames 0..10 are due over 0.5 s


def test_unknown_scene_or_script_key_is_a_readable_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown scene 'snow'.*walker"):
        SyntheticSource(camera(url="snow"))
    with pytest.raises(ConfigError, match="covered has no 'when'"):
        SyntheticSource(camera(url="covered?when=3"))


def test_open_source_picks_the_backend_by_kind() -> None:
    assert isinstance(open_source(camera()), SyntheticSource)
    assert isinstance(open_source(camera(source="file", url=str(PETS))), PyAVSource)
    assert isinstance(open_source(camera(source="v4l2", url="/dev/video0")), V4L2Source)


def sibling_imports(module: Path) -> set[str]:
    """The edge.video.sources modules ``module`` imports, at any depth (functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n.rsplit(".", 1)[1] for n in names if n.startswith("edge.video.sources."))
    return found


def test_sources_import_one_way_base_then_backends_then_factory() -> None:
    """No import circle: base knows no backend, backends know base, only factory knows all."""
    folder = Path(__file__).resolve().parents[1] / "edge" / "video" / "sources"
    graph = {p.stem: sibling_imports(p) for p in folder.glob("*.py") if p.stem != "__init__"}
    assert graph["base"] == set()
    assert graph["factory"] == {"base", "synthetic", "pyav_source", "picamera2_source"}
    for backend in ("synthetic", "pyav_source", "picamera2_source"):
        assert "base" in graph[backend] and "factory" not in graph[backend], graph[backend]
    # The graph has no cycle at all (depth-first search).
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in graph.get(name, set()):
                visit(dep, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())


# -- files and RTSP through PyAV -----------------------------------------------------------


def test_avi_file_packets_pass_through_byte_for_byte() -> None:
    cam = camera(source="file", url=str(PETS))
    items = asyncio.run(collect(PyAVSource(cam, realtime=False), lambda _: False))
    with av.open(str(PETS)) as c:
        ref = [(bytes(p), bool(p.is_keyframe)) for p in c.demux(c.streams.video[0]) if p.size]
    pk = packets(items)
    assert [(p.data, p.keyframe) for p in pk] == ref
    assert sum(k for _, k in ref) == 4  # the footage has a keyframe every 25 s
    lf = lumas(items)
    assert len(lf) == len(pk)  # a file is decoded entirely (no skipping when not live)
    assert lf[0].y.shape == (180, 240)  # 360 / 2
    assert states(items) == [(True, "receiving video"), (False, "end of stream")]


def write_mp4(path: Path, frames: int = 30, gop: int = 10) -> None:
    """An MP4 as any camera / NVR exports it: avcC extradata, length-prefixed packets."""
    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.codec_context.gop_size = gop
        base = rng.integers(0, 255, (360, 320), dtype=np.uint8)
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.roll(base, i * 3, axis=1), format="yuv420p")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)


def test_mp4_is_converted_to_annexb_with_parameter_sets_on_keyframes(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_mp4(path)
    with av.open(str(path)) as c:
        assert bytes(c.streams.video[0].codec_context.extradata)[:1] == b"\x01"  # avcC
    cam = camera(source="file", url=str(path))
    pk = packets(asyncio.run(collect(PyAVSource(cam, realtime=False), lambda _: False)))
    assert len(pk) == 30
    assert all(p.data.startswith(b"\x00\x00\x00\x01") for p in pk)
    keys = [p for p in pk if p.keyframe]
    assert len(keys) == 3 and all({NAL_SPS, NAL_PPS} <= set(nal_types(k.data)) for k in keys)
    # any keyframe is a valid starting point for a decoder that knows nothing else
    assert len(decode(pk[pk.index(keys[1]) :])) == 20


def test_analysis_frames_come_from_the_substream_when_there_is_one(tmp_path: Path) -> None:
    main = tmp_path / "main.mp4"
    write_mp4(main, frames=10)  # 320x240, one second at 10 fps (played in real time)
    cam = camera(source="file", url=str(main), substream_url=str(PETS))
    items = asyncio.run(collect(PyAVSource(cam), lambda _: False))
    assert len(packets(items)) == 10
    shapes = {lf.y.shape for lf in lumas(items)}
    assert shapes == {(180, 240)}  # the 480x360 sub-stream, not the 320x240 main stream
    assert states(items) == [(True, "receiving video"), (False, "end of stream")]


def test_missing_file_is_reported_then_reconnected_with_backoff(tmp_path: Path) -> None:
    path = tmp_path / "late.mp4"
    cam = camera(source="file", url=str(path))
    src = PyAVSource(cam, realtime=False, backoff=(0.02, 0.1))

    async def main() -> list[Item]:
        items: list[Item] = []
        async for item in src.packets():
            items.append(item)
            if len(items) == 1:
                write_mp4(tmp_path / "tmp.mp4", frames=10)
                shutil.move(tmp_path / "tmp.mp4", path)  # appears whole, as a camera returns
        return items

    items = asyncio.run(asyncio.wait_for(main(), 20))
    (first_up, reason), *rest = states(items)
    assert not first_up and str(path) in reason
    assert rest == [(True, "receiving video"), (False, "end of stream")]
    assert len(packets(items)) == 10


def test_v4l2_pictures_are_masked_and_encoded_by_us() -> None:
    # lavfi's test pattern stands in for /dev/video0 (the same decode -> mask -> encode path)
    cam = camera(
        source="v4l2", url="testsrc2=size=320x240:rate=10:duration=2", privacy_masks=[TOP_LEFT]
    )
    src = V4L2Source(cam, input_format="lavfi", live=False)  # hardware first, then libx264
    items = asyncio.run(collect(src, lambda _: False))
    assert src.encoder_name == "libx264"  # no SoC encoder here: the fallback
    pk = packets(items)
    assert len(pk) == 20 and [p.pts for p in pk if p.keyframe] == [0, 10]
    for y in decode(pk):
        assert abs(float(y[:120, :160].mean()) - BLACK_Y) < 3
        assert float(y[120:, 160:].std()) > 10


def test_parameter_sets_are_put_back_in_front_of_a_bare_keyframe() -> None:
    items = asyncio.run(collect(SyntheticSource(camera(), realtime=False), count_frames(25)))
    pk = packets(items)
    second = next(p for p in pk[1:] if p.keyframe)
    # as a camera that sends SPS/PPS only in its SDP
    bare = b"".join(
        b"\x00\x00\x00\x01" + u for u in nal_units(second.data) if u[0] & 0x1F == NAL_IDR
    )
    assert NAL_SPS not in nal_types(bare)
    sets = ParameterSets()
    sets.fix(pk[0].data, True)
    fixed = sets.fix(bare, True)
    assert fixed != bare and fixed.endswith(bare) and sets.prepended == 1
    assert sets.fix(pk[1].data, False) == pk[1].data
    tail = [dataclass_with(p, fixed) if p is second else p for p in pk[pk.index(second) :]]
    assert len(decode(tail)) == len(tail)


def dataclass_with(p: EncodedPacket, data: bytes) -> EncodedPacket:
    return EncodedPacket(p.camera, data, p.pts, p.time_base, p.keyframe)


def test_credentials_never_appear_in_reasons() -> None:
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact("/var/clips/a.mp4") == "/var/clips/a.mp4"


# -- masks and decimation ------------------------------------------------------------------


def test_polygon_mask_covers_the_pixels_whose_centre_is_inside() -> None:
    square = polygon_mask(TOP_LEFT, 8, 6)
    assert square.sum() == 12 and square[:3, :4].all()
    tri = polygon_mask([(0, 0), (1, 0), (0, 1)], 10, 10)
    # centres exactly on an edge count as inside: a mask errs on the side of hiding
    assert tri.sum() == 55 and tri[9, 0] and not tri[9, 1] and not tri[5, 5]
    assert privacy_mask([], 8, 6) is None


def test_burn_i420_respects_a_padded_stride() -> None:
    w, h, stride = 8, 4, 16
    buf = np.full(stride * h * 3 // 2, 200, dtype=np.uint8)
    burn_i420(buf, polygon_mask(TOP_LEFT, w, h), w, h, stride)
    y = buf[: stride * h].reshape(h, stride)
    assert (y[:2, :4] == BLACK_Y).all() and (y[:2, 4:] == 200).all() and (y[2:] == 200).all()
    u = buf[stride * h : stride * h + stride // 2 * h // 2].reshape(h // 2, stride // 2)
    assert u[0, 0] == 128 and u[0, 2] == 200 and (u[:, 4:] == 200).all()


def test_analysis_stride_brings_frames_to_about_analysis_rows() -> None:
    assert [analysis_stride(h, 176) for h in (240, 360, 720, 1080, 100)] == [1, 2, 4, 6, 1]
