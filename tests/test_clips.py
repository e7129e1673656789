"""Clips from real libx264 packets, checked with ffprobe and by demuxing the MP4 back.

Stream: 320x240 at 10 fps, a keyframe every 2 s. Clips: 3 s before the alarm, 4 s after.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from support import h264

from edge.video.clips import ClipError, ClipInfo, ClipSession, write_mp4
from edge.video.frames import EncodedPacket, nal_units
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
    assert len(frames) == info.frames == len(session.packets) == 75  # 4.0 .. 11.4 s
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
    assert len(samples) == len(session.packets)
    for pkt, (nals, key) in zip(session.packets, samples, strict=True):
        assert nals == nal_units(pkt.data)
        assert key == pkt.keyframe
    assert session.packets[0] is next(p for p in stream if p.seconds == 4.0)


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
    assert session.packets[0].keyframe and session.packets[0].seconds == pytest.approx(6.0)
    assert session.finish().duration_s == pytest.approx(9.1 - 6.0)


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
    assert done_at is stream[90] and len(big.packets) == 50  # 4.0 .. 8.9 s, then cut
    info = big.finish()
    assert info.duration_s == pytest.approx(5.0) and info.end_s < 7.45 + POST
