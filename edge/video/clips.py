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

Memory: a clip is written while it is recorded (:mod:`edge.video.mp4`, in a writer thread per
clip: :mod:`edge.video.clip_writer`), so a 10-minute alarm costs what a few seconds do. What a
reader sees meanwhile is in :mod:`edge.video.mp4`.

Threading: :meth:`ClipSession.extend` and :meth:`ClipSession.feed` are cheap and run on the
event loop (``feed`` hands the packet to the writer thread, never waiting for it);
:meth:`ClipSession.finish` waits for the writer, makes the faststart file and fsyncs, so the
service runs it in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from edge.fsutil import atomic_write
from edge.video.clip_writer import ClipWriter
from edge.video.frames import EncodedPacket
from edge.video.mp4 import (
    FILE_MODE,
    MP4_TIME_BASE,
    ClipError,
    Mp4Result,
    picture_size,
    snapshot_jpeg,
    write_mp4,
)

if TYPE_CHECKING:
    from edge.video.ring import PacketRing

__all__ = [
    "FILE_MODE",
    "MAX_CLIP_BYTES",
    "MAX_CLIP_S",
    "MP4_TIME_BASE",
    "ClipError",
    "ClipInfo",
    "ClipSession",
    "Mp4Result",
    "picture_size",
    "sha256_file",
    "snapshot_jpeg",
    "write_mp4",
]

log = logging.getLogger(__name__)

MAX_CLIP_S = 600.0  # extensions stop here: a re-triggering zone must not record forever
MAX_CLIP_BYTES = 256 * 1024 * 1024  # one clip's file: the disk quota and delivery need a bound


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
    :meth:`finish` (off the event loop). Packets go to the clip's writer thread as they come:
    the session keeps none of them.
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
        self.path = self.out_dir / f"{camera}-{self.id}.mp4"
        self.end_s = alarm_s + post_s
        self._limit_s = alarm_s + max_s
        self._max_bytes = max_bytes
        self._writer: ClipWriter | None = None
        self.start_s: float | None = None  # the first packet's time (a keyframe)
        self.frames = 0  # packets handed to the writer
        self.bytes = 0
        self._end_pts_s: float | None = None  # first packet past the end: exact last duration
        self.complete = False
        for pkt in ring.since(alarm_s - pre_s):
            if self.feed(pkt):
                break

    @property
    def backlog(self) -> int:
        """Bytes handed to the writer thread and not on disk yet."""
        return self._writer.backlog if self._writer is not None else 0

    def extend(self, alarm_s: float, event_id: str) -> None:
        """Another alarm while recording: keep going until ``post_s`` after it."""
        if self.complete:
            raise ClipError(f"camera {self.camera}: clip {self.id} is complete; start a new one")
        if event_id not in self.event_ids:
            self.event_ids.append(event_id)
        self.end_s = min(max(self.end_s, alarm_s + self.post_s), self._limit_s)

    def feed(self, pkt: EncodedPacket) -> bool:
        """Take the next packet; True once the clip is complete (the packet is then not used)."""
        if self.complete:
            return True
        if pkt.seconds >= self.end_s:
            return self._end(pkt)
        if self._writer is None:
            if not pkt.keyframe:
                return False  # nothing decodable yet: wait for a keyframe
            self._writer = ClipWriter(self.camera, self.path, self.alarm_s)  # makes out_dir
            self.start_s = pkt.seconds
        if self.bytes + len(pkt.data) > self._max_bytes:
            return self._end(pkt, f"reached {self._max_bytes // (1024 * 1024)} MiB")
        if not self._writer.put(pkt):
            why = "the disk does not keep up" if self._writer.error is None else "writing failed"
            return self._end(pkt, why)
        self.frames += 1
        self.bytes += len(pkt.data)
        return False

    def _end(self, pkt: EncodedPacket, cut: str = "") -> bool:
        if cut:
            log.warning(
                "camera %s: clip %s %s; cut short at %.1f s",
                self.camera,
                self.id,
                cut,
                pkt.seconds - (self.start_s if self.start_s is not None else pkt.seconds),
            )
        self._end_pts_s = pkt.seconds
        self.complete = True
        return True

    def finish(self) -> ClipInfo:
        """Write the rest, the MP4 and the JPEG durably (blocking: run it in a worker thread)."""
        self.complete = True
        if self._writer is None:
            raise ClipError(
                f"camera {self.camera}: no video was received for clip {self.id} "
                "(no keyframe arrived): check the camera and `journalctl -u edge-video`"
            )
        result = self._writer.close(self._end_pts_s)
        jpg: Path | None = self.out_dir / f"{self.path.stem}.jpg"
        try:
            if result.jpeg is None:
                raise ClipError(result.snapshot_problem or "no picture at the alarm")
            atomic_write(self.out_dir / f"{self.path.stem}.jpg", result.jpeg)
        except (ClipError, OSError) as exc:  # the clip itself is what matters: keep it
            log.warning("camera %s: no snapshot for clip %s: %s", self.camera, self.id, exc)
            jpg = None
        return ClipInfo(
            id=self.id,
            camera=self.camera,
            event_ids=tuple(self.event_ids),
            path=self.path,
            snapshot=jpg,
            alarm_s=self.alarm_s,
            start_s=result.start_s,
            end_s=result.start_s + result.duration_s,
            duration_s=result.duration_s,
            bytes=self.path.stat().st_size,
            sha256=sha256_file(self.path),
            width=result.width,
            height=result.height,
            frames=result.frames,
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
