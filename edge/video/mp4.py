"""A clip's MP4, written while it is recorded, and the pictures decoded from its H.264.

Memory is bounded whatever the clip's length: packets go to disk a GOP at a time (a GOP: a
keyframe and the frames after it until the next one). While recording, the file is a
fragmented MP4 (``movflags=frag_keyframe+empty_moov+default_base_moof``): an empty index
first, then one self-contained fragment (``moof`` + ``mdat``) per GOP, flushed to the file as
soon as the next keyframe arrives. That file, ``.<clip>.mp4.rec.tmp`` beside the clip, plays
in ffplay / VLC / a browser up to its last whole GOP at any moment; its name ends in ``.tmp``
so the clip index sweeps it away if a crash cut the recording. When the clip ends, it is
remuxed (packets copied, never re-encoded) into a plain MP4 with the index in front
(faststart: a browser or the central station plays while downloading, and seeks at once),
fsynced and renamed to ``<clip>.mp4``; only then does the clip exist for the index.

Why not keep the packets in memory until the end (as before): a 10-minute alarm at 2 Mb/s
held 150 MB per camera. Why not write the faststart file directly: FFmpeg writes its index at
the end, so the file would be unreadable until then and lost whole in a crash. The remux
costs one more read and write of the clip, at its end, in the writer's thread.

Timestamps: the MP4 clock is 90 kHz; the first decode timestamp is 0. Packets carry no dts:
decode order is the order given, so within each GOP the dts are its sorted pts shifted back
by the reordering delay of the clip's first GOP (zero without B-frames), kept increasing
across GOPs; a frame lasts until the next one, the last until the first packet after the
clip when known. The snapshot is the picture shown at the alarm, decoded from the GOP that
holds it as soon as that GOP is complete, so the recorder never keeps more than one GOP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from edge.errors import EdgeError
from edge.fsutil import commit
from edge.video.frames import EncodedPacket, nal_units

MP4_TIME_BASE = Fraction(1, 90_000)  # the usual video clock: exact for every common frame rate
FILE_MODE = 0o640  # video of people: readable by the edge group only
GOP_MAX_BYTES = 4 * 1024 * 1024  # a longer GOP is written in pieces (a camera without keyframes)
RECORDING = {
    # A fragment per packet: the muxer holds nothing back (with frag_keyframe it would hold a
    # whole GOP more); the extra bytes (about 100 per frame) go with the remux at the end.
    "movflags": "frag_every_frame+empty_moov+default_base_moof",
    "flush_packets": "1",  # what is muxed reaches the file at once (readers see it)
}


class ClipError(EdgeError, RuntimeError):
    """A clip could not be written; the message names the camera, the file and the cause."""


@dataclasses.dataclass(frozen=True)
class Mp4Result:
    """What was written: times are the camera's stream seconds."""

    start_s: float
    duration_s: float
    width: int
    height: int
    frames: int
    jpeg: bytes | None  # the snapshot at ``snapshot_at_s``, if one was asked for and decoded
    snapshot_problem: str | None


def recording_path(path: Path) -> Path:
    """The fragmented file a clip grows in until it is finished."""
    return path.with_name(f".{path.name}.rec.tmp")


class Mp4Recorder:
    """One clip's MP4, fed packets in decode order (a keyframe with SPS/PPS first).

    Blocking (muxing, decoding, disk): run it in a worker thread. Holds at most one GOP.
    """

    def __init__(self, path: Path, snapshot_at_s: float | None = None) -> None:
        self.path = path
        self.part = recording_path(path)
        self.snapshot_at_s = snapshot_at_s
        self.frames = 0
        self.width = self.height = 0
        self.start_s = 0.0
        self.jpeg: bytes | None = None
        self.snapshot_problem: str | None = None
        self._snapshot_done = snapshot_at_s is None
        self._gop: list[EncodedPacket] = []
        self._gop_bytes = 0
        self._out: Any = None
        self._stream: Any = None
        self._base: int | None = None  # 90 kHz tick of the first dts
        self._shift = 0  # reordering delay (B-frames) of the first GOP, in ticks
        self._last_dts = -1
        self._last_pts = -1
        self._step = 3000  # the last frame's duration when nothing follows it
        self._ticks = 0  # total duration written

    def add(self, pkt: EncodedPacket) -> None:
        """Take the next packet; a GOP is written when the next keyframe arrives."""
        if self._out is None:
            self._open(pkt)
        elif pkt.keyframe or self._gop_bytes + len(pkt.data) > GOP_MAX_BYTES:
            self._flush(_tick(pkt), pkt.seconds)
        self._gop.append(pkt)
        self._gop_bytes += len(pkt.data)

    def finish(self, end_s: float | None = None) -> Mp4Result:
        """Write what is left, make the faststart MP4 for good; ``end_s``: the time of the
        first packet after the clip (the last frame's exact duration)."""
        if self._out is None:
            raise ClipError(f"{self.path}: no video was written")
        try:
            if self._gop:
                end = round(Fraction(end_s) / MP4_TIME_BASE) if end_s is not None else None
                self._flush(end, end_s)
            self._out.close()
            self._out = None
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            _create(tmp)
            _faststart(self.part, tmp)
            commit(tmp, self.path)
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise ClipError(f"{self.path}: cannot write the clip: {exc}") from exc
        self.part.unlink(missing_ok=True)
        return Mp4Result(
            start_s=self.start_s,
            duration_s=float(self._ticks * MP4_TIME_BASE),
            width=self.width,
            height=self.height,
            frames=self.frames,
            jpeg=self.jpeg,
            snapshot_problem=self.snapshot_problem,
        )

    def abort(self) -> None:
        """Give up: close and delete what was written (the finished clip is never touched)."""
        if self._out is not None:
            with contextlib.suppress(av.FFmpegError, OSError):
                self._out.close()
            self._out = None
        self._gop.clear()
        for leftover in (self.part, self.path.with_name(f".{self.path.name}.tmp")):
            with contextlib.suppress(OSError):  # gone, or never made (no folder)
                leftover.unlink(missing_ok=True)

    # -- writing -----------------------------------------------------------------------------
    def _open(self, first: EncodedPacket) -> None:
        if not first.keyframe:
            raise ClipError(f"{self.path}: a clip must start on a keyframe")
        if not {7, 8} <= {b[0] & 0x1F for b in nal_units(first.data)}:
            raise ClipError(
                f"{self.path}: the first keyframe carries no SPS/PPS; the camera source must "
                "send them in front of every keyframe (Annex-B)"
            )
        self.width, self.height = picture_size(first)
        self.start_s = first.seconds
        self.part.parent.mkdir(parents=True, exist_ok=True)
        _create(self.part)
        try:
            self._out = av.open(str(self.part), "w", format="mp4", options=RECORDING)
            self._stream = self._out.add_mux_stream("h264", width=self.width, height=self.height)
            self._stream.time_base = MP4_TIME_BASE
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise ClipError(f"{self.path}: cannot start the clip: {exc}") from exc

    def _flush(self, next_tick: int | None, next_s: float | None) -> None:
        """Mux the GOP held; ``next_tick``: 90 kHz time of the packet after it (if known)."""
        gop, self._gop, self._gop_bytes = self._gop, [], 0
        self._snapshot(gop, next_s)
        for pkt, (pts, dts, duration) in zip(gop, self._stamps(gop, next_tick), strict=True):
            packet = av.Packet(pkt.data)
            packet.stream = self._stream
            packet.time_base = MP4_TIME_BASE
            packet.pts, packet.dts, packet.duration = pts, dts, duration
            packet.is_keyframe = pkt.keyframe
            self._out.mux(packet)
        self.frames += len(gop)

    def _stamps(
        self, gop: Sequence[EncodedPacket], next_tick: int | None
    ) -> list[tuple[int, int, int]]:
        """(pts, dts, duration) of each packet of a GOP (module docstring)."""
        raw = _unique([_tick(p) for p in gop])
        ordered = sorted(raw)
        if self._base is None:
            self._shift = max(s - p for s, p in zip(ordered, raw, strict=True))
            self._base = ordered[0] - self._shift
        base = self._base
        lag = max(0, self._last_pts + 1 - (ordered[0] - base))  # time went back: keep going
        dts, last = [], self._last_dts
        for s in ordered:
            last = max(last + 1, s + lag - base - self._shift)
            dts.append(last)
        pts = [max(p + lag - base, d) for p, d in zip(raw, dts, strict=True)]
        shown = sorted(pts)
        nxt = dict(itertools.pairwise(shown))
        if next_tick is not None:
            end = max(next_tick + lag - base, shown[-1] + 1)
        else:
            end = shown[-1] + (shown[-1] - shown[-2] if len(shown) > 1 else self._step)
        nxt[shown[-1]] = end
        self._step = end - shown[-1]
        self._last_dts, self._last_pts = dts[-1], shown[-1]
        durations = [nxt[p] - p for p in pts]
        self._ticks += sum(durations)
        return list(zip(pts, dts, durations, strict=True))

    def _snapshot(self, gop: list[EncodedPacket], next_s: float | None) -> None:
        """Decode the picture at the alarm once the GOP showing it is complete."""
        at = self.snapshot_at_s
        if self._snapshot_done or at is None:
            return
        if next_s is not None and next_s <= at:
            return  # a later GOP starts at or before the alarm: the picture is there
        self._snapshot_done = True
        try:
            self.jpeg = snapshot_jpeg(gop, at)
        except ClipError as exc:
            self.snapshot_problem = str(exc)


def write_mp4(
    packets: Sequence[EncodedPacket], path: Path, end_s: float | None = None
) -> Mp4Result:
    """Mux ``packets`` (decode order, starting on a keyframe) into ``path`` at once."""
    if not packets or not packets[0].keyframe:
        raise ClipError(f"{path}: a clip must start on a keyframe")
    recorder = Mp4Recorder(path)
    try:
        for pkt in packets:
            recorder.add(pkt)
    except (av.FFmpegError, OSError) as exc:
        recorder.abort()
        raise ClipError(f"{path}: cannot write the clip: {exc}") from exc
    return recorder.finish(end_s)


def _tick(pkt: EncodedPacket) -> int:
    return round(pkt.pts * pkt.time_base / MP4_TIME_BASE)


def _unique(pts: list[int]) -> list[int]:
    """Nudge repeated timestamps (a camera bug) one tick later: the muxer needs them distinct."""
    seen: set[int] = set()
    out = []
    for p in pts:
        while p in seen:
            p += 1
        seen.add(p)
        out.append(p)
    return out


def _create(path: Path) -> None:
    """An empty file with the clip's mode (FFmpeg truncates it and keeps the mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.close(fd)
    os.chmod(path, FILE_MODE)  # an older file of that name keeps its mode otherwise


def _faststart(part: Path, out_path: Path) -> None:
    """Copy the fragmented recording's packets into a plain MP4 with the index in front."""
    with av.open(str(part)) as src:
        video = src.streams.video[0]
        with av.open(str(out_path), "w", format="mp4", options={"movflags": "faststart"}) as out:
            stream = out.add_stream_from_template(video)
            stream.time_base = video.time_base
            for packet in src.demux(video):
                if packet.dts is None:  # the demuxer's empty packet at the end
                    continue
                packet.stream = stream
                out.mux(packet)


# -- decoding (snapshot, picture size) ----------------------------------------------------------
def decode(packets: Iterable[EncodedPacket]) -> Iterable[Any]:
    """Decoded frames of ``packets`` (starting on a keyframe), flushed at the end.

    One decoding thread: a GOP is a few dozen frames, and each extra thread would hold its
    own picture buffers (about 5 MB more at 720p, kept by the heap of the thread that asked).
    """
    ctx = av.CodecContext.create("h264", "r")
    ctx.thread_count = 1
    try:
        for pkt in packets:
            packet = av.Packet(pkt.data)
            packet.pts = pkt.pts
            yield from ctx.decode(packet)
        yield from ctx.decode(None)
    except av.FFmpegError as exc:
        raise ClipError(f"the H.264 stream cannot be decoded: {exc}") from exc


def picture_size(keyframe: EncodedPacket) -> tuple[int, int]:
    """Width and height of the pictures, read by decoding one keyframe."""
    for frame in decode([keyframe]):
        return int(frame.width), int(frame.height)
    raise ClipError(
        f"camera {keyframe.camera}: the keyframe at {keyframe.seconds:.3f} s decodes to nothing"
    )


def snapshot_jpeg(packets: Sequence[EncodedPacket], at_s: float) -> bytes:
    """The picture shown at ``at_s`` (the last frame at or before it) as JPEG bytes.

    Only the GOP holding ``at_s`` is decoded, and only one frame is kept at a time.
    """
    start = max((i for i, p in enumerate(packets) if p.keyframe and p.seconds <= at_s), default=0)
    end = next((i for i in range(start + 1, len(packets)) if packets[i].keyframe), len(packets))
    best: Any = None
    for frame in decode(packets[start:end]):  # frames come out in presentation order
        shown = float(frame.pts * packets[0].time_base) if frame.pts is not None else at_s
        if best is not None and shown > at_s:
            break
        best = frame
    if best is None:
        raise ClipError(f"camera {packets[0].camera}: no picture decoded for the snapshot")
    enc = av.CodecContext.create("mjpeg", "w")
    enc.thread_count = 1  # one picture: threads would only add buffers (10+ MB at 720p)
    enc.width, enc.height, enc.pix_fmt = best.width, best.height, "yuvj420p"
    enc.time_base = Fraction(1, 1)
    picture = best.reformat(format="yuvj420p")
    picture.pts = 0
    try:
        return b"".join(bytes(p) for p in [*enc.encode(picture), *enc.encode(None)])
    except av.FFmpegError as exc:
        raise ClipError(f"camera {packets[0].camera}: JPEG encoding failed: {exc}") from exc
