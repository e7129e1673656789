"""Pre/post-alarm clips: the camera's own H.264 packets muxed into an MP4, plus a JPEG snapshot.

A clip starts at the last keyframe at or before ``alarm - pre_s`` (taken from the camera's
:class:`~edge.video.ring.PacketRing`) and runs until ``post_s`` after the *last* alarm:
alarms that arrive while a clip is still recording extend it, so a burst of alarms gives one
clip that serves every event in it.

Why no re-encoding: the packets are muxed as the camera sent them (the MP4 muxer only turns
Annex-B start codes into length prefixes and builds the avcC header from the keyframe's
SPS/PPS), so a clip costs no CPU to encode, keeps the camera's quality, and is evidence of
what the camera produced. Only the snapshot is decoded (one GOP at most) and encoded as JPEG.

Why faststart: the index ("moov") goes before the media ("mdat"), so a browser or the central
station can start playing a clip while it downloads.

Threading: :meth:`ClipSession.extend` and :meth:`ClipSession.feed` are cheap and run on the
event loop; :meth:`ClipSession.finish` muxes, decodes and fsyncs, so the service runs it in a
worker thread (``asyncio.to_thread``). Nothing here imports av until ``finish`` runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import EdgeError
from edge.fsutil import atomic_write, commit
from edge.video.frames import EncodedPacket, nal_units

if TYPE_CHECKING:
    from edge.video.ring import PacketRing

log = logging.getLogger(__name__)

MP4_TIME_BASE = Fraction(1, 90_000)  # the usual video clock: exact for every common frame rate
MAX_CLIP_S = 600.0  # extensions stop here: a re-triggering zone must not record forever
MAX_CLIP_BYTES = 256 * 1024 * 1024  # a clip is held in memory until finish(): bound it
FILE_MODE = 0o640  # video of people: readable by the edge group only


class ClipError(EdgeError, RuntimeError):
    """A clip could not be written; the message names the camera, the file and the cause."""


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    """A finished clip. Times are the camera's stream seconds; the index maps them to UTC."""

    id: str
    camera: str
    event_ids: tuple[str, ...]
    path: Path
    snapshot: Path | None
    alarm_s: float  # the first alarm of the clip (the snapshot instant)
    start_s: float
    end_s: float
    duration_s: float
    bytes: int
    sha256: str
    width: int
    height: int
    frames: int


class ClipSession:
    """One clip being recorded for one camera, from its pre-alarm until ``post_s`` after.

    Create it when the alarm arrives (it takes the pre-alarm from ``ring``), then feed it every
    packet pushed to the ring afterwards until :meth:`feed` returns True, then call
    :meth:`finish` (off the event loop).
    """

    def __init__(
        self,
        camera: str,
        event_id: str,
        alarm_s: float,
        pre_s: float,
        post_s: float,
        ring: PacketRing,
        out_dir: Path,
        *,
        max_s: float = MAX_CLIP_S,
        max_bytes: int = MAX_CLIP_BYTES,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.camera = camera
        self.event_ids: list[str] = [event_id]
        self.alarm_s = alarm_s
        self.post_s = post_s
        self.out_dir = Path(out_dir)
        self.end_s = alarm_s + post_s
        self._limit_s = alarm_s + max_s
        self._max_bytes = max_bytes
        self._packets: list[EncodedPacket] = []
        self._bytes = 0
        self._end_pts_s: float | None = None  # first packet past the end: exact last duration
        self.complete = False
        for pkt in ring.since(alarm_s - pre_s):
            if self.feed(pkt):
                break

    def extend(self, alarm_s: float, event_id: str) -> None:
        """Another alarm while recording: keep going until ``post_s`` after it."""
        if self.complete:
            raise ClipError(f"camera {self.camera}: clip {self.id} is complete; start a new one")
        if event_id not in self.event_ids:
            self.event_ids.append(event_id)
        self.end_s = min(max(self.end_s, alarm_s + self.post_s), self._limit_s)

    def feed(self, pkt: EncodedPacket) -> bool:
        """Take the next packet; True once the clip is complete (the packet is then not kept)."""
        if self.complete:
            return True
        if pkt.seconds >= self.end_s:
            self._end_pts_s = pkt.seconds
            self.complete = True
            return True
        if not self._packets and not pkt.keyframe:
            return False  # nothing decodable yet: wait for a keyframe
        if self._bytes + len(pkt.data) > self._max_bytes:
            log.warning(
                "camera %s: clip %s reached %d MiB; cut short at %.1f s",
                self.camera,
                self.id,
                self._max_bytes // (1024 * 1024),
                pkt.seconds - self._packets[0].seconds,
            )
            self._end_pts_s = pkt.seconds
            self.complete = True
            return True
        self._packets.append(pkt)
        self._bytes += len(pkt.data)
        return False

    @property
    def packets(self) -> Sequence[EncodedPacket]:
        return tuple(self._packets)

    def finish(self) -> ClipInfo:
        """Write the MP4 and the JPEG durably (blocking: run it in a worker thread)."""
        self.complete = True
        if not self._packets:
            raise ClipError(
                f"camera {self.camera}: no video was received for clip {self.id} "
                "(no keyframe arrived): check the camera and `journalctl -u edge-video`"
            )
        base = f"{self.camera}-{self.id}"
        mp4 = self.out_dir / f"{base}.mp4"
        stats = write_mp4(self._packets, mp4, self._end_pts_s)
        jpg: Path | None = self.out_dir / f"{base}.jpg"
        try:
            atomic_write(self.out_dir / f"{base}.jpg", snapshot_jpeg(self._packets, self.alarm_s))
        except (ClipError, OSError) as exc:  # the clip itself is what matters: keep it
            log.warning("camera %s: no snapshot for clip %s: %s", self.camera, self.id, exc)
            jpg = None
        start_s = self._packets[0].seconds
        return ClipInfo(
            id=self.id,
            camera=self.camera,
            event_ids=tuple(self.event_ids),
            path=mp4,
            snapshot=jpg,
            alarm_s=self.alarm_s,
            start_s=start_s,
            end_s=start_s + stats.duration_s,
            duration_s=stats.duration_s,
            bytes=mp4.stat().st_size,
            sha256=sha256_file(mp4),
            width=stats.width,
            height=stats.height,
            frames=len(self._packets),
        )


# -- MP4 ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _MuxStats:
    duration_s: float
    width: int
    height: int


def write_mp4(
    packets: Sequence[EncodedPacket], path: Path, end_s: float | None = None
) -> _MuxStats:
    """Mux ``packets`` (decode order, starting on a keyframe) into ``path`` without re-encoding.

    ``end_s`` is the time of the first packet *after* the clip, which makes the last frame's
    duration exact; without it the last frame lasts as long as the one before it.
    """
    import av

    if not packets or not packets[0].keyframe:
        raise ClipError(f"{path}: a clip must start on a keyframe")
    nal_types = {b[0] & 0x1F for b in nal_units(packets[0].data)}
    if not {7, 8} <= nal_types:
        raise ClipError(
            f"{path}: the first keyframe carries no SPS/PPS; the camera source must send them "
            "in front of every keyframe (Annex-B)"
        )
    width, height = picture_size(packets[0])
    timing = _timing(packets, end_s)
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "faststart"}) as out:
            stream = out.add_mux_stream("h264", width=width, height=height)
            stream.time_base = MP4_TIME_BASE
            for pkt, (pts, dts, duration) in zip(packets, timing, strict=True):
                packet = av.Packet(pkt.data)
                packet.stream = stream
                packet.time_base = MP4_TIME_BASE
                packet.pts, packet.dts, packet.duration = pts, dts, duration
                packet.is_keyframe = pkt.keyframe
                out.mux(packet)
        os.chmod(tmp, FILE_MODE)
        commit(tmp, path)
    except (av.FFmpegError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise ClipError(f"{path}: cannot write the clip: {exc}") from exc
    duration = sum(d for _, _, d in timing)
    return _MuxStats(float(duration * MP4_TIME_BASE), width, height)


def _timing(packets: Sequence[EncodedPacket], end_s: float | None) -> list[tuple[int, int, int]]:
    """(pts, dts, duration) of each packet on the 90 kHz clock, the first dts at 0.

    Packets carry no dts: decode order is the order given, so the dts are the sorted pts
    shifted back just enough to stay at or before each pts (zero shift without B-frames).
    """
    pts = _unique([round(p.pts * p.time_base / MP4_TIME_BASE) for p in packets])
    ordered = sorted(pts)
    shift = max(s - p for s, p in zip(ordered, pts, strict=True))
    base = ordered[0] - shift
    nxt = dict(itertools.pairwise(ordered))
    if end_s is not None:
        last = max(round(Fraction(end_s) / MP4_TIME_BASE), ordered[-1] + 1)
    else:
        last = ordered[-1] + (ordered[-1] - ordered[-2] if len(ordered) > 1 else 3000)
    nxt[ordered[-1]] = last
    dts = [s - shift - base for s in ordered]
    return [(p - base, d, nxt[p] - p) for p, d in zip(pts, dts, strict=True)]


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


# -- decoding (snapshot, picture size) ----------------------------------------------------------
def _decode(packets: Iterable[EncodedPacket]) -> Iterable[Any]:
    """Decoded frames of ``packets`` (starting on a keyframe), flushed at the end."""
    import av

    ctx = av.CodecContext.create("h264", "r")
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
    for frame in _decode([keyframe]):
        return int(frame.width), int(frame.height)
    raise ClipError(
        f"camera {keyframe.camera}: the keyframe at {keyframe.seconds:.3f} s decodes to nothing"
    )


def snapshot_jpeg(packets: Sequence[EncodedPacket], at_s: float) -> bytes:
    """The picture shown at ``at_s`` (the last frame at or before it) as JPEG bytes.

    Only the GOP holding ``at_s`` is decoded, and only one frame is kept at a time.
    """
    import av

    start = max((i for i, p in enumerate(packets) if p.keyframe and p.seconds <= at_s), default=0)
    end = next((i for i in range(start + 1, len(packets)) if packets[i].keyframe), len(packets))
    best: Any = None
    for frame in _decode(packets[start:end]):  # frames come out in presentation order
        shown = float(frame.pts * packets[0].time_base) if frame.pts is not None else at_s
        if best is not None and shown > at_s:
            break
        best = frame
    if best is None:
        raise ClipError(f"camera {packets[0].camera}: no picture decoded for the snapshot")
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = best.width, best.height, "yuvj420p"
    enc.time_base = Fraction(1, 1)
    picture = best.reformat(format="yuvj420p")
    picture.pts = 0
    try:
        return b"".join(bytes(p) for p in [*enc.encode(picture), *enc.encode(None)])
    except av.FFmpegError as exc:
        raise ClipError(f"camera {packets[0].camera}: JPEG encoding failed: {exc}") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
