"""Clips from real libx264 packets, checked with ffprobe and by demuxing the MP4 back.

Stream: 320x240 at 10 fps, a keyframe every 2 s. Clips: 3 s before the alarm, 4 s after.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import shutil
import subprocess
import time
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from support import h264

from edge.video.clips import ClipError, ClipInfo, ClipSession, write_mp4
from edge.video.frames import EncodedPacket, nal_units
from edge.video.mp4 import recording_path
from edge.video.ring import PacketRing

PRE, POST = 3.0, 4.0
FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(FFPROBE is None, reason="ffprobe is not installed")


@pytest.fixture(scope="module")
def stream() -> list[EncodedPacket]:
    return h264.encode(200)  # 20 s


def record(
    packets: list[EncodedPacket], out: Path, alarms: list[tuple[float, str]]
) -> tuple[ClipSession, ClipInfo]:
    """Drive ring and session the way the video service does: push, then feed."""
    ring = PacketRing(PRE, 4 * 1024 * 1024)
    session: ClipSession | None = None
    pending = sorted(alarms)
    for pkt in packets:
        while pending and pending[0][0] < pkt.seconds:
            at, event_id = pending.pop(0)
            if session is None:
                session = ClipSession("cam1", event_id, at, PRE, POST, ring, out)
            else:
                session.extend(at, event_id)
        ring.push(pkt)
        if session is not None and session.feed(pkt):
            break
    assert session is not None and session.complete
    return session, session.finish()


def ffprobe(path: Path) -> dict[str, Any]:
    assert FFPROBE is not None
    cmd = [FFPROBE, "-v", "error", "-show_entries", "stream=codec_name,width,height"]
    cmd += ["-show_entries", "format=duration", "-show_frames", "-of", "json", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    assert done.stderr == "", done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes, i = [], 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[i + 8 : i + 16], "big")
        elif size == 0:
            size = len(data) - i
        assert size >= 8, f"corrupt box {kind!r} at {i}"
        boxes.append(kind)
        i += size
    assert i == len(data), "boxes must tile the file"
    return boxes


def mp4_samples(path: Path) -> list[tuple[list[bytes], bool]]:
    """NAL units of every video sample (length-prefixed in MP4), with its keyframe flag."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        extradata = stream.codec_context.extradata
        assert extradata is not None and extradata[0] == 1, "avcC header expected"
        size = (extradata[4] & 3) + 1
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            data, nals, i = bytes(packet), [], 0
            while i < len(data):
                n = int.from_bytes(data[i : i + size], "big")
                nals.append(data[i + size : i + size + n])
                i += size + n
            out.append((nals, bool(packet.is_keyframe)))
    return out


@needs_ffprobe
@pytest.mark.parametrize("time_base", [h264.RTP_CLOCK, Fraction(1, 1_000_000)])
def test_clip_covers_pre_and_post_and_is_valid_h264(tmp_path: Path, time_base: Fraction) -> None:
    packets = h264.encode(200, time_base=time_base)
    alarm = 7.45
    session, info = record(packets, tmp_path, [(alarm, "ev1")])
    probe = ffprobe(info.path)
    assert probe["streams"] == [{"codec_name": "h264", "width": 320, "height": 240}]
    duration = float(probe["format"]["duration"])
    assert duration >= PRE + POST
    assert info.start_s == pytest.approx(4.0)  # last keyframe at or before 7.45 - 3
    assert info.start_s <= alarm - PRE and info.end_s >= alarm + POST
    assert duration == pytest.approx(info.duration_s, abs=1e-3)
    frames = probe["frames"]
    assert frames[0]["key_frame"] == 1 and frames[0]["pict_type"] == "I"
    times = [float(f["pts_time"]) for f in frames]
    assert times[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(times)), "pts must increase"
    assert len(frames) == info.frames == session.frames == 75  # 4.0 .. 11.4 s
    keys = [i for i, f in enumerate(frames) if f["key_frame"] == 1]
    assert keys == [0, 20, 40, 60]
    assert (info.width, info.height) == (320, 240)


@needs_ffprobe
def test_mp4_is_faststart_and_file_is_committed(
    stream: list[EncodedPacket], tmp_path: Path
) -> None:
    _, info = record(stream, tmp_path, [(7.45, "ev1")])
    boxes = top_level_boxes(info.path)
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    assert info.bytes == info.path.stat().st_size
    from edge.video.clips import sha256_file

    assert info.sha256 == sha256_file(info.path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([info.path.name, info.snapshot.name if info.snapshot else ""])
    assert info.path.stat().st_mode & 0o777 == 0o640


def test_packets_are_muxed_byte_for_byte_without_reencoding(
    stream: list[EncodedPacket], tmp_path: Path
) -> None:
    session, info = record(stream, tmp_path, [(7.45, "ev1")])
    samples = mp4_samples(info.path)
    first = next(i for i, p in enumerate(stream) if p.seconds == 4.0)
    sent = stream[first : first + session.frames]
    assert len(samples) == len(sent) == 75
    for pkt, (nals, key) in zip(sent, samples, strict=True):
        assert nals == nal_units(pkt.data)
        assert key == pkt.keyframe
    assert session.start_s == 4.0


@needs_ffprobe
def test_overlapping_alarms_extend_one_clip(stream: list[EncodedPacket], tmp_path: Path) -> None:
    session, info = record(stream, tmp_path, [(7.45, "ev1"), (9.05, "ev2"), (9.5, "ev1")])
    assert info.event_ids == ("ev1", "ev2")
    duration = float(ffprobe(info.path)["format"]["duration"])
    assert duration >= (9.5 + POST) - (7.45 - PRE)
    assert info.start_s == pytest.approx(4.0) and info.end_s >= 13.5
    assert len(list(tmp_path.glob("*.mp4"))) == 1
    with pytest.raises(ClipError, match="complete"):
        session.extend(20.0, "ev3")


@needs_ffprobe
def test_snapshot_is_the_picture_at_the_alarm(stream: list[EncodedPacket], tmp_path: Path) -> None:
    _, info = record(stream, tmp_path, [(7.45, "ev1")])
    assert info.snapshot is not None
    data = info.snapshot.read_bytes()
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    probe = ffprobe(info.snapshot)
    assert probe["streams"] == [{"codec_name": "mjpeg", "width": 320, "height": 240}]
    with av.open(str(info.snapshot)) as container:
        gray = next(container.decode(video=0)).to_ndarray(format="gray")
    row = gray[h264.HEIGHT // 2]
    left = int(np.flatnonzero(row > 160)[0])
    expected = (74 * h264.STEP) % (h264.WIDTH - h264.SQUARE)  # frame 74 is shown at 7.4 s
    assert abs(left - expected) <= 2, (left, expected)


def test_clip_waits_for_a_keyframe_when_the_ring_is_empty(
    stream: list[EncodedPacket], tmp_path: Path
) -> None:
    ring = PacketRing(PRE, 1 << 22)
    session = ClipSession("cam1", "ev1", 5.05, PRE, POST, ring, tmp_path)
    for pkt in stream[51:]:  # joins mid-GOP at 5.1 s: packets before 6.0 cannot be decoded
        if session.feed(pkt):
            break
    assert session.start_s == pytest.approx(6.0)
    info = session.finish()
    assert info.start_s == pytest.approx(6.0) and info.duration_s == pytest.approx(9.1 - 6.0)
    assert mp4_samples(info.path)[0][1], "the clip starts on a keyframe"


def test_clip_without_video_or_parameter_sets_is_refused(
    stream: list[EncodedPacket], tmp_path: Path
) -> None:
    empty = ClipSession("cam1", "ev1", 1.0, PRE, POST, PacketRing(PRE, 1 << 20), tmp_path)
    with pytest.raises(ClipError, match="no video"):
        empty.finish()
    key = stream[0]
    bare = b"".join(
        b"\x00\x00\x00\x01" + n for n in nal_units(key.data) if n[0] & 0x1F not in (7, 8)
    )
    stripped = EncodedPacket(key.camera, bare, key.pts, key.time_base, True)
    with pytest.raises(ClipError, match="SPS/PPS"):
        write_mp4([stripped, *stream[1:5]], tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


def test_nal_units_handles_three_and_four_byte_start_codes() -> None:
    data = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x01\x65\xcc\x00"
    assert nal_units(data) == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc"]


def test_clip_length_and_memory_are_bounded(stream: list[EncodedPacket], tmp_path: Path) -> None:
    ring = PacketRing(PRE, 1 << 22)
    for pkt in stream[:75]:
        ring.push(pkt)
    long = ClipSession("cam1", "ev1", 7.45, PRE, POST, ring, tmp_path, max_s=6.0)
    long.extend(9.0, "ev2")
    long.extend(12.0, "ev3")  # would end at 16 s: capped 6 s after the first alarm
    assert long.end_s == pytest.approx(7.45 + 6.0)
    budget = sum(len(p.data) for p in stream[40:90])
    big = ClipSession("cam1", "ev1", 7.45, PRE, POST, ring, tmp_path, max_bytes=budget)
    done_at = next(p for p in stream[75:] if big.feed(p))
    assert done_at is stream[90] and big.frames == 50  # 4.0 .. 8.9 s, then cut
    info = big.finish()
    assert info.duration_s == pytest.approx(5.0) and info.end_s < 7.45 + POST


# -- written while recorded -------------------------------------------------------------------


def wait_written(session: ClipSession, timeout: float = 10.0) -> None:
    """Until the writer thread has taken every packet handed to it."""
    deadline = time.monotonic() + timeout
    while session.backlog:
        assert time.monotonic() < deadline, "the writer thread did not keep up"
        time.sleep(0.01)


def copies(packets: list[EncodedPacket]) -> list[EncodedPacket]:
    """Packets with their own bytes, as a camera hands over (and weakly referenceable)."""
    return [dataclasses.replace(p, data=bytes(bytearray(p.data))) for p in packets]


def test_clip_is_written_while_recorded_and_keeps_no_packet(
    stream: list[EncodedPacket], tmp_path: Path
) -> None:
    """A reader sees every whole GOP so far in the recording file; the session and its writer
    keep only the GOP under way, so memory does not follow the clip's length."""
    ring = PacketRing(PRE, 1 << 22)
    session = ClipSession("cam1", "ev1", 0.05, 0.0, 100.0, ring, tmp_path)
    fed = copies(stream[:125])  # 6 whole GOPs (0 .. 11.9 s), then 5 packets of the 7th
    refs = [weakref.ref(p) for p in fed]
    for pkt in fed:
        assert not session.feed(pkt)
    del fed, pkt
    wait_written(session)
    gc.collect()
    alive = [i for i, r in enumerate(refs) if r() is not None]
    assert alive == list(range(120, 125)), "only the GOP under way is held"

    part = recording_path(session.path)
    assert not session.path.exists() and part.stat().st_mode & 0o777 == 0o640
    with av.open(str(part)) as container:  # a fragmented MP4, playable as it grows
        frames = list(container.decode(video=0))
    # Every whole GOP, but for its last frame, which the muxer writes when the next comes.
    assert len(frames) in (119, 120) and frames[0].key_frame
    assert [f.width for f in frames[:1]] == [320]

    session.extend(0.05, "ev2")
    for pkt in copies(stream[125:200]):
        session.feed(pkt)
    info = session.finish()
    assert not part.exists() and info.frames == 200
    assert top_level_boxes(info.path)[:2] == ["ftyp", "moov"], "faststart once finished"
    assert info.duration_s == pytest.approx(20.0)


def test_a_clip_that_cannot_be_written_ends_and_says_why(
    stream: list[EncodedPacket], tmp_path: Path
) -> None:
    blocked = tmp_path / "clips"
    blocked.write_text("a file where the clips folder should be")
    session = ClipSession("cam1", "ev1", 1.0, 0.0, 10.0, PacketRing(PRE, 1 << 20), blocked)
    done = None
    for pkt in stream[:40]:  # the writer fails on the first packet: feeding stops soon
        if session.feed(pkt):
            done = pkt
            break
        wait_written(session)
    assert done is not None and session.complete and session.frames <= 2
    with pytest.raises(ClipError, match=r"cam1: cannot write .*clips/cam1-"):
        session.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips"]


@needs_ffprobe
def test_b_frames_keep_their_order_across_gops(tmp_path: Path) -> None:
    """A camera that reorders frames (B-frames): dts stay below pts and increase, GOP after
    GOP, and every picture is shown once, in order."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = h264.WIDTH, h264.HEIGHT, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, 10), Fraction(10)
    ctx.options = {"preset": "fast", "x264-params": "bframes=2:keyint=20:min-keyint=20:"
                   "scenecut=0:repeat-headers=1:open-gop=0"}  # fmt: skip
    packets: list[EncodedPacket] = []
    for i in [*range(60), None]:
        frame = None
        if i is not None:
            frame = av.VideoFrame.from_ndarray(h264.picture(i), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = i
        for p in ctx.encode(frame):
            assert p.pts is not None
            packets.append(EncodedPacket("cam1", bytes(p), p.pts, Fraction(1, 10), p.is_keyframe))
    assert any(b.pts < a.pts for a, b in itertools.pairwise(packets)), "B-frames expected"
    info = write_mp4(packets, tmp_path / "b.mp4", end_s=6.0)
    assert info.frames == 60 and info.duration_s == pytest.approx(6.0)
    frames = ffprobe(tmp_path / "b.mp4")["frames"]
    times = [float(f["pts_time"]) for f in frames]
    assert len(times) == 60 and times == sorted(times)
    with av.open(str(tmp_path / "b.mp4")) as container:
        demuxed = [p for p in container.demux(video=0) if p.dts is not None]
    assert all(p.dts <= p.pts for p in demuxed)
    assert all(a.dts < b.dts for a, b in itertools.pairwise(demuxed))
