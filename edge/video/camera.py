"""One camera inside edge-video: source → ring → clips, and luma → motion and health.

Stream time and the box clocks. An alarm arrives as an event stamped with UTC wall-clock
time (``ts``); a clip is cut on the camera's stream time (packet ``pts``). :class:`StreamClock`
keeps, per camera, the offset between the two, measured when packets arrive:
``arrival − pkt.seconds``. Two choices, and why:

- The arrival is taken on the *monotonic* clock, and an event's wall time is turned into
  monotonic time by its age (``time.time() − ts``) at the moment we convert it. When the
  wall clock is steady this is the same as measuring ``time.time() − pkt.seconds``; when it
  steps (a Raspberry Pi has no RTC: NTP steps it after boot) only the few events stamped
  across the step are off, instead of every offset measured before it.
- Arrival = capture + latency (encoding, queueing), and latency is never negative, so the
  *smallest* offset seen is the best estimate of the capture instant. The estimate is a
  minimum that leaks upwards slowly (``LEAK_S_PER_S``) to follow drift between the camera's
  clock and ours, and restarts from scratch on a jump (``JUMP_S``: the stream restarted and
  its pts went back to zero). An EWMA would instead carry the mean queueing delay into every
  clip start.

CPU: motion and health on a ~176-row analysis frame cost about 0.1-0.2 ms each (measured on
the development machine), so they run on the event loop; a camera whose analysis averages
more than ``OFFLOAD_S`` per frame moves it to a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge.bus.topics import topic_id
from edge.config.video import Camera, Clips
from edge.journal_schema import iso_utc
from edge.video.clips import MAX_CLIP_S, ClipError, ClipInfo, ClipSession
from edge.video.frames import EncodedPacket, LumaFrame
from edge.video.health import HealthChange, HealthMonitor
from edge.video.live.feed import LiveFeed
from edge.video.motion import MotionDetector, MotionEvent
from edge.video.ring import PacketRing
from edge.video.sources import Source, SourceState, open_source

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MAX_SESSIONS = 3  # clips of one camera being recorded or written at once
PENDING_ALARMS = 8  # alarms kept while the camera's clock is not known yet
TICK_S = 1.0
STALL_GRACE_S = 5.0  # a clip whose end passed this long ago (camera silent) is cut there
OFFLOAD_S = 0.004  # average analysis time per frame above which it moves off the loop
PRE_TOLERANCE_S = 0.2  # pre-alarm this much shorter than configured is still "as configured"
EWMA = 0.05


def camera_topic(camera: str, what: str) -> str:
    """``edge/video/<camera>/<what>``: state (retained), motion, health."""
    return f"edge/video/{topic_id(camera, 'camera id')}/{what}"


def wall_iso(wall: float) -> str:
    return iso_utc(dt.datetime.fromtimestamp(wall, dt.timezone.utc))


class StreamClock:
    """Offset between the monotonic clock and one camera's stream seconds (module docstring)."""

    LEAK_S_PER_S = 0.001
    JUMP_S = 2.0

    def __init__(self) -> None:
        self.offset: float | None = None
        self.resets = 0
        self._at = 0.0

    @property
    def known(self) -> bool:
        return self.offset is not None

    def observe(self, stream_s: float, mono: float) -> None:
        sample = mono - stream_s
        if self.offset is None or abs(sample - self.offset) > self.JUMP_S:
            if self.offset is not None:
                self.resets += 1
                log.info("stream clock jumped by %.3f s: measuring again", sample - self.offset)
            self.offset = sample
        else:
            leaked = self.offset + self.LEAK_S_PER_S * max(0.0, mono - self._at)
            self.offset = min(sample, leaked)
        self._at = mono

    def now_s(self) -> float:
        """The stream time of what the camera shows now (estimate)."""
        assert self.offset is not None
        return time.monotonic() - self.offset

    def stream_s(self, wall: float) -> float:
        """Stream time of a wall-clock instant; the future is clamped to now."""
        age = max(0.0, time.time() - wall)
        return self.now_s() - age

    def wall(self, stream_s: float) -> float:
        """Wall-clock time (epoch seconds) of a stream instant."""
        assert self.offset is not None
        return stream_s + self.offset + (time.time() - time.monotonic())


@dataclasses.dataclass(frozen=True)
class Alarm:
    """An alarm or tamper event of edge-alarm that wants a clip; ``wall`` is its UTC epoch."""

    event_id: str
    kind: str
    zone: str | None
    wall: float


@dataclasses.dataclass
class _Recording:
    session: ClipSession
    alarm_at: dt.datetime
    motion: set[str] = dataclasses.field(default_factory=set)  # zones that saw motion
    note: str | None = None  # why the clip is shorter than configured, in words


class Sink(Protocol):
    """What the service offers a camera: bounded publishing and indexing of finished clips."""

    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None: ...

    async def saved(
        self,
        info: ClipInfo,
        alarm_at: dt.datetime,
        motion: frozenset[str] = frozenset(),
        note: str | None = None,
    ) -> None: ...

    def state_changed(self) -> None: ...


class CameraPipeline:
    """Reads one camera and keeps its ring, clips, motion and health; owned by the service."""

    def __init__(self, cam: Camera, clips: Clips, out_dir: Path, sink: Sink) -> None:
        self.cam = cam
        self.clips = clips
        self.out_dir = out_dir
        self.sink = sink
        self.source: Source = open_source(cam)  # a bad scene / url is a ConfigError here
        self.ring = PacketRing(clips.pre_s, clips.ring_max_mb * MIB)
        self.feed = LiveFeed(cam.id)  # live viewers of this camera
        self.clock = StreamClock()
        self.health = HealthMonitor(cam.health, cam.fps, cam.id)
        self.motion: MotionDetector | None = None
        self.recording: list[_Recording] = []
        self.pending: collections.deque[Alarm] = collections.deque(maxlen=PENDING_ALARMS)
        self.saves: set[asyncio.Task[None]] = set()
        self.up: bool | None = None
        self.reason = "opening"
        self.first_item = asyncio.Event()
        self.analysis_s = 0.0
        self.offload = False
        self.video_since: float | None = None  # monotonic time of the first packet

    # -- reading ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Supervised: consume the source; after an end of stream (a file), idle."""
        async for item in self.source.packets():
            self.first_item.set()
            if isinstance(item, EncodedPacket):
                self._packet(item)
            elif isinstance(item, LumaFrame):
                await self._luma(item)
            else:
                self._state(item)
        self._state(SourceState(self.cam.id, False, "end of stream"))
        self.first_item.set()
        await asyncio.get_running_loop().create_future()

    def _packet(self, pkt: EncodedPacket) -> None:
        if self.video_since is None:
            self.video_since = time.monotonic()
        self.clock.observe(pkt.seconds, time.monotonic())
        self.ring.push(pkt)
        self.feed.push(pkt)
        for rec in list(self.recording):
            if rec.session.feed(pkt):
                self._complete(rec)
        while self.pending:
            self.alarm(self.pending.popleft())

    async def _luma(self, frame: LumaFrame) -> None:
        if self.offload:
            motion, health = await asyncio.to_thread(self._analyse, frame, time.monotonic())
        else:
            motion, health = self._analyse(frame, time.monotonic())
        if not self.offload and self.analysis_s > OFFLOAD_S:
            self.offload = True
            log.warning(
                "camera %s: analysis takes %.1f ms per frame: moved off the event loop",
                self.cam.id,
                self.analysis_s * 1000,
            )
        self._publish_motion(motion)
        self._publish_health(health)

    def _analyse(
        self, frame: LumaFrame, mono: float
    ) -> tuple[list[MotionEvent], list[HealthChange]]:
        """Motion on stream time, health on arrival time (a silent camera has no stream time).

        The cost is the thread's CPU time (not wall time, which would count waiting for the
        GIL behind the encoder threads); building a detector is not counted.
        """
        events: list[MotionEvent] = []
        if self.cam.motion.enabled:
            shape = (int(frame.y.shape[0]), int(frame.y.shape[1]))
            if self.motion is None or self.motion.layout.shape != shape:
                self.motion = MotionDetector(self.cam.motion, shape)
        t0 = time.thread_time()
        if self.motion is not None:
            events = self.motion.feed(frame.y, frame.seconds)
        changes = self.health.feed(frame, mono)
        self.analysis_s += EWMA * (time.thread_time() - t0 - self.analysis_s)
        return events, changes

    def _state(self, state: SourceState) -> None:
        if state.up == self.up:
            return
        self.up, self.reason = state.up, state.reason
        if not state.up and self.motion is not None:
            self._publish_motion(self.motion.flush(0.0))
            self.motion = None  # the background is relearned when video comes back
        self.sink.publish(
            camera_topic(self.cam.id, "state"),
            {"v": 1, "camera": self.cam.id, "up": state.up, "reason": state.reason,
             "ts": wall_iso(time.time())},
            retain=True,
        )  # fmt: skip
        self.sink.state_changed()

    # -- ticking ---------------------------------------------------------------------------
    async def ticker(self, beat: Callable[[], None]) -> None:
        """Supervised: signal loss, clips whose camera went silent, the watchdog beat."""
        while True:
            beat()
            self._publish_health(self.health.tick(time.monotonic()))
            if self.clock.known:
                now_s = self.clock.now_s()
                for rec in list(self.recording):
                    if now_s > rec.session.end_s + STALL_GRACE_S:
                        log.warning(
                            "camera %s: no video to end clip %s: saving what was recorded",
                            self.cam.id,
                            rec.session.id,
                        )
                        self._complete(rec)
            await asyncio.sleep(TICK_S)

    # -- clips -----------------------------------------------------------------------------
    def wants(self, zone: str | None) -> bool:
        return not self.cam.alarm_zones or zone in self.cam.alarm_zones

    def alarm(self, alarm: Alarm) -> None:
        """Open a clip for ``alarm``, or extend the one recording (one clip per burst)."""
        if not self.clock.known:
            if len(self.pending) == self.pending.maxlen:
                self._missed(self.pending[0], f"{PENDING_ALARMS} later alarms came before video")
            self.pending.append(alarm)
            return
        at_s = self.clock.stream_s(alarm.wall)
        pre_s, post_s = self.clips.pre_s, self.clips.post_s
        if self._too_old(alarm, at_s):
            return
        for rec in self.recording:
            if rec.session.alarm_s + MAX_CLIP_S >= at_s + post_s:
                rec.session.extend(at_s, alarm.event_id)
                log.info("camera %s: clip %s extended", self.cam.id, rec.session.id)
                return
        if len(self.recording) + len(self.saves) >= MAX_SESSIONS:
            self._missed(alarm, f"{MAX_SESSIONS} clips already in progress")
            return
        note = self._short_pre_alarm(alarm, at_s)  # read the ring before the session does
        session = ClipSession(
            self.cam.id, alarm.event_id, at_s, pre_s, post_s, self.ring, self.out_dir
        )
        at = dt.datetime.fromtimestamp(alarm.wall, dt.timezone.utc)
        rec = _Recording(session, at, note=note)
        if self.motion is not None:
            rec.motion.update(self.motion.active)  # motion already under way at the alarm
        log.info("camera %s: clip %s for event %s", self.cam.id, session.id, alarm.event_id)
        if session.complete:  # the whole clip was already in the ring (a late event)
            self._complete(rec)
        else:
            self.recording.append(rec)

    def _too_old(self, alarm: Alarm, at_s: float) -> bool:
        """Nothing of the clip is in the ring: an event resent long after (broker outage), or
        an alarm whose whole clip was over before the camera's first frame."""
        held = self.ring.keyframe_times()
        if not held or at_s + self.clips.post_s >= held[0]:
            return False
        age = self.clock.now_s() - at_s
        late = f"the alarm is {age:.0f} s old: its video is no longer in memory"
        early = "the camera had no video yet: it had just started"
        self._missed(alarm, early if self._before_video(alarm, self.clips.post_s) else late)
        return True

    def _before_video(self, alarm: Alarm, margin_s: float) -> bool:
        """Did ``margin_s`` before the alarm (or after: negative) precede the first frame?"""
        mono = time.monotonic() - max(0.0, time.time() - alarm.wall)
        return self.video_since is not None and mono - margin_s < self.video_since

    def _short_pre_alarm(self, alarm: Alarm, at_s: float) -> str | None:
        """Why the clip gets less pre-alarm than configured (from its first frame), or None."""
        pre_s = self.clips.pre_s
        held = self.ring.held_before(at_s, pre_s)
        if held >= pre_s - PRE_TOLERANCE_S:
            return None
        started = self._before_video(alarm, pre_s)
        why = "the camera had just started" if started else "the camera's video was interrupted"
        return f"pre-alarm shorter than configured ({held:.1f} s of {pre_s:g} s): {why}"

    def _missed(self, alarm: Alarm, why: str) -> None:
        """No clip for ``alarm``: said in the log and to edge-alarm, which journals it."""
        log.warning("camera %s: no clip for event %s: %s", self.cam.id, alarm.event_id, why)
        body = {"v": 1, "camera": self.cam.id, "event_id": alarm.event_id, "why": why}
        self.sink.publish(camera_topic(self.cam.id, "clip_missed"), body)

    def _complete(self, rec: _Recording) -> None:
        if rec in self.recording:
            self.recording.remove(rec)
        task = asyncio.create_task(self._save(rec), name=f"clip-{rec.session.id}")
        self.saves.add(task)
        task.add_done_callback(self.saves.discard)

    async def _save(self, rec: _Recording) -> None:
        """Mux and fsync off the loop, then let the service index and announce the clip."""
        try:
            info = await asyncio.to_thread(rec.session.finish)
            await self.sink.saved(info, rec.alarm_at, frozenset(rec.motion), rec.note)
        except (ClipError, OSError) as exc:
            log.error("camera %s: clip %s not saved: %s", self.cam.id, rec.session.id, exc)
        except Exception:  # a bug must not take the other cameras down; it is logged
            log.exception("camera %s: clip %s failed", self.cam.id, rec.session.id)

    async def finish_all(self) -> None:
        """Shutdown: write what the open clips hold and wait for every clip being written."""
        for rec in list(self.recording):
            self._complete(rec)
        if self.saves:
            await asyncio.gather(*list(self.saves), return_exceptions=True)

    def stop_saves(self) -> None:
        for task in list(self.saves):
            task.cancel()

    # -- publishing ------------------------------------------------------------------------
    def _publish_motion(self, events: list[MotionEvent]) -> None:
        """Every zone, alarm or tag, marks the clips recording while it sees motion."""
        for ev in events:
            for rec in self.recording:
                rec.motion.add(ev.zone)
            payload = {
                "v": 1,
                "camera": self.cam.id,
                "zone": ev.zone,
                "action": ev.action,
                "state": "start" if ev.end_s is None else "end",
                "start": self._iso(ev.start_s),
                "end": None if ev.end_s is None else self._iso(ev.end_s),
                "peak_cells": ev.peak_cells,
                "cells": [list(c) for c in ev.cells],
            }
            self.sink.publish(camera_topic(self.cam.id, "motion"), payload)

    def _iso(self, stream_s: float) -> str:
        return wall_iso(self.clock.wall(stream_s) if self.clock.known else time.time())

    def _publish_health(self, changes: list[HealthChange]) -> None:
        for ch in changes:
            (log.warning if ch.active else log.info)(
                "camera %s: %s %s (%s)",
                self.cam.id,
                ch.fault,
                "raised" if ch.active else "cleared",
                ch.value,
            )
            payload = {
                "v": 1,
                "camera": self.cam.id,
                "fault": ch.fault,
                "active": ch.active,
                "value": ch.value,
                "ts": wall_iso(time.time()),
            }
            self.sink.publish(camera_topic(self.cam.id, "health"), payload)

    def status(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "reason": self.reason,
            "ring_s": round(self.ring.duration_s, 1),
            "ring_bytes": self.ring.bytes,
            "recording": len(self.recording),
            "saving": len(self.saves),
            "health": sorted(self.health.active),
            "analysis_ms": round(self.analysis_s * 1000, 2),
        }

    async def close(self) -> None:
        try:
            await self.source.close()
        except Exception:  # shutting down: the other cameras must still be closed
            log.exception("camera %s: closing its source failed", self.cam.id)
