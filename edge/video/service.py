"""edge-video: every camera of the site in one process (ARCHITECTURE §2), watched by systemd.

Per camera (:mod:`edge.video.camera`): a supervised reader feeds encoded packets to the
pre-alarm ring and the clips being recorded, and luma frames to motion and health; a ticker
checks signal loss and beats the watchdog. Across cameras:

- alarms: journal events of edge-alarm arrive on ``edge/events``; an event of category alarm
  or tamper opens a clip on every camera (or on those whose ``alarm_zones`` name its zone),
  or extends the clip already recording there, so a burst of alarms gives one clip;
- a finished clip is indexed (:class:`ClipIndex`), then its metadata is published on the
  box bus ``edge/clips/<event id>`` and toward the central station (``edge/up/clips/<event
  id>``) once per event it serves; the file follows in chunks (:mod:`edge.video.delivery`).
  Journaling (CLIP_SAVED / CLIP_DELETED, motion, health) through edge-alarm is a later step;
- retention (age limit, disk quota) runs every RETENTION_EVERY_S and after each clip;
- publishing never blocks a camera: messages go through one bounded queue (oldest dropped
  first, counted) to a publisher task that waits for the broker.

Shutdown (SIGTERM): the readers stop, clips being recorded are written with what they hold
(bounded by SHUTDOWN_CLIPS_S), the last messages are flushed, the cameras are closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from edge import __version__, system
from edge.bus import Bus, Topics, identity
from edge.bus.identity import optional_credentials
from edge.bus.topics import topic_id
from edge.config import SiteConfig
from edge.errors import BusError, CommandError
from edge.journal_schema import parse_iso
from edge.tasks import supervise, within
from edge.uplink.topics import up_clip
from edge.video.camera import Alarm, CameraPipeline, camera_topic
from edge.video.clip_index import ClipIndex, ClipRecord, clips_dir, index_path
from edge.video.clips import ClipInfo
from edge.video.delivery import ClipSender
from edge.video.live.runtime import LiveRuntime
from edge.video.maintenance import VideoMaintenance

log = logging.getLogger(__name__)

VIDEO_STATUS = "edge/video/status"
CLIP_CATEGORIES = ("alarm", "tamper")
CLIP_TOPICS = ("edge/clips/", "edge/up/clips/")
# Journaled by edge-alarm (clips, live-view audit): never dropped to make room.
JOURNALED = ("/clip_saved", "/clip_deleted", "/clip_missed", "/live")
OUT_QUEUE = 512  # messages waiting for the box broker
SEEN_IDS = 1024  # event ids remembered: the bus delivers at least once
RETENTION_EVERY_S = 600.0
STATUS_EVERY_S = 30.0
READY_WAIT_S = 10.0  # READY=1 once every camera delivered something (or failed), or this
SHUTDOWN_CLIPS_S = 5.0
FLUSH_S = 2.0
MIB = 1024 * 1024


def clip_topic(event_id: str) -> str:
    """``edge/clips/<event id>``: a clip serving that event was saved on this box."""
    return f"edge/clips/{topic_id(event_id, 'event id')}"


def clip_payload(record: ClipRecord, event_id: str) -> dict[str, Any]:
    """What the central station learns about a clip, per event it serves."""
    return {
        "v": 1,
        "event_id": event_id,
        "event_ids": list(record.event_ids),
        "clip_id": record.id,
        "camera": record.camera,
        "start": record.start_ts,
        "end": record.end_ts,
        "duration_s": round(record.duration_s, 3),
        "bytes": record.bytes,
        "sha256": record.sha256,
        "snapshot": record.snapshot is not None,
    }


def alarm_of(event: Any) -> Alarm | None:
    """The alarm in a journal event, or None when the event wants no clip; ValueError if bad."""
    if not isinstance(event, dict):
        raise ValueError("an event is a JSON object")
    if event.get("category") not in CLIP_CATEGORIES:
        return None
    kind = str(event.get("kind", ""))
    if kind.endswith("_restore"):
        return None
    event_id, ts = event.get("id"), event.get("ts")
    if not isinstance(event_id, str) or not isinstance(ts, str):
        raise ValueError("the event has no string id or ts")
    topic_id(event_id, "event id")
    zone = event.get("zone")
    return Alarm(event_id, kind, zone if isinstance(zone, str) else None, parse_iso(ts).timestamp())


class VideoService:
    """Owns the cameras, the clip index, the bus and the loops that connect them."""

    def __init__(self, cfg: SiteConfig) -> None:
        self.cfg = cfg
        self.stop = asyncio.Event()
        self.bus = Bus(
            cfg.bus.url,
            f"edge-video-{cfg.site.id}",
            queue_size=cfg.bus.queue_size,
            keepalive=cfg.bus.keepalive_s,
            will=(VIDEO_STATUS, b'{"v":1,"running":false}', True),
            credentials=optional_credentials(cfg.bus.identities_dir, identity.VIDEO),
        )
        out_dir = clips_dir(cfg)
        self.cameras = {  # first: a camera that cannot be set up is a ConfigError (exit 78)
            cam.id: CameraPipeline(cam, cfg.video.clips, out_dir, self) for cam in cfg.video.cameras
        }
        self.index = ClipIndex(index_path(cfg))
        self.live = LiveRuntime(cfg, self.bus, self.cameras, self._live_report)
        self.maintenance = VideoMaintenance(self)  # restart / reconnect asked by edge-alarm
        if self.live.web is not None:
            self.live.web.diag_report = self.maintenance.latest_report
        self.watchdog = system.Watchdog()
        self.sender = (  # clip files go to the central station only over its bridge
            ClipSender(
                site_id=cfg.site.id,
                bus=self.bus,
                index=self.index,
                beat=self.watchdog.beat,
                metadata=clip_payload,
            )
            if cfg.central is not None
            else None
        )
        self.outq: collections.deque[tuple[str, dict[str, Any], bool]] = collections.deque()
        self.out_ready = asyncio.Event()
        self.dropped = 0
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.retention_due = asyncio.Event()
        self.status_due = asyncio.Event()
        self.started = time.monotonic()

    # -- Sink (used by the cameras) ------------------------------------------------------------
    def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        """Queue a message for the box bus; never blocks, makes room when full."""
        if len(self.outq) >= OUT_QUEUE:
            self._make_room()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("box bus too slow: %d video message(s) dropped", self.dropped)
        self.outq.append((topic, payload, retain))
        self.out_ready.set()

    def _make_room(self) -> None:
        """Drop the oldest motion / health / state message; clip announcements go last."""
        for i, (topic, _, _) in enumerate(self.outq):
            if not topic.startswith(CLIP_TOPICS) and not topic.endswith(JOURNALED):
                del self.outq[i]
                return
        self.outq.popleft()

    async def saved(
        self,
        info: ClipInfo,
        alarm_at: dt.datetime,
        motion: frozenset[str] = frozenset(),
        note: str | None = None,
    ) -> None:
        record = await asyncio.to_thread(self.index.add, info, alarm_at)
        # What the clip really holds before the alarm, and why it is short (camera.py).
        pre = {"pre_alarm_s": round(max(0.0, info.alarm_s - info.start_s), 1)}
        tags: dict[str, Any] = {"motion": sorted(motion), **pre, **({"note": note} if note else {})}
        log.info(
            "camera %s: clip %s saved: %.1f s, %d bytes, events %s",
            record.camera,
            record.id,
            record.duration_s,
            record.bytes,
            ", ".join(record.event_ids),
        )
        report = {**_clip_report(record, "saved"), **tags}
        self.publish(camera_topic(record.camera, "clip_saved"), report)
        for event_id in record.event_ids:
            sender = self.sender
            payload = sender.payload(record, event_id) if sender else clip_payload(record, event_id)
            payload = {**payload, **tags}
            self.publish(clip_topic(event_id), payload)
            self.publish(up_clip(event_id), payload)
        self.retention_due.set()
        if self.sender:
            self.sender.wake()

    def state_changed(self) -> None:
        self.status_due.set()

    def _live_report(self, camera: str, body: dict[str, Any]) -> None:
        self.publish(camera_topic(camera, "live"), body)
        self.status_due.set()

    # -- loops ---------------------------------------------------------------------------------
    async def publisher(self) -> None:
        """Send queued messages in order, each until the broker took it."""
        self.watchdog.register("publisher", max_silence=30.0)
        backoff = 0.1
        while True:
            self.watchdog.beat("publisher")
            if not self.outq:
                self.out_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await within(self.out_ready.wait(), 1.0)
                continue
            topic, payload, retain = self.outq[0]
            try:
                await self.bus.publish(topic, payload, retain=retain, timeout=5.0)
            except BusError as exc:
                log.warning(
                    "box bus unavailable, %d video message(s) wait: %s", len(self.outq), exc
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if self.outq and self.outq[0][0] == topic and self.outq[0][1] is payload:
                self.outq.popleft()

    async def alarms(self) -> None:
        """Journal events of edge-alarm → clips on the cameras concerned."""
        self.watchdog.register("alarms", max_silence=30.0)
        sub = self.bus.subscribe(Topics.EVENTS, maxsize=self.cfg.bus.queue_size)
        with sub:
            while True:
                self.watchdog.beat("alarms")
                try:
                    msg = await sub.get(timeout=1.0)
                except TimeoutError:
                    continue
                try:
                    alarm = alarm_of(msg.json())
                except (CommandError, ValueError, TypeError) as exc:
                    log.warning("ignored a malformed event on %s: %s", msg.topic, exc)
                    continue
                if alarm is not None and self._first_time(alarm.event_id):
                    self.on_alarm(alarm)

    def _first_time(self, event_id: str) -> bool:
        if event_id in self.seen:
            return False
        self.seen[event_id] = None
        if len(self.seen) > SEEN_IDS:
            self.seen.popitem(last=False)
        return True

    def on_alarm(self, alarm: Alarm) -> None:
        chosen = [c for c in self.cameras.values() if c.wants(alarm.zone)]
        log.info(
            "%s event %s (zone %s): clip on %s",
            alarm.kind,
            alarm.event_id,
            alarm.zone or "-",
            ", ".join(c.cam.id for c in chosen) or "no camera",
        )
        for camera in chosen:
            camera.alarm(alarm)

    async def retention(self) -> None:
        """Age limit and quota, now and then, and after every saved clip."""
        self.watchdog.register("retention", max_silence=300.0)
        clips = self.cfg.video.clips
        next_at = time.monotonic()
        while True:
            self.watchdog.beat("retention")
            if self.retention_due.is_set() or time.monotonic() >= next_at:
                self.retention_due.clear()
                next_at = time.monotonic() + RETENTION_EVERY_S
                deleted = await asyncio.to_thread(
                    self.index.enforce, clips.retention_days, clips.quota_mb * MIB, _deleted
                )
                for record, reason in deleted:
                    report = _clip_report(record, reason)
                    self.publish(camera_topic(record.camera, "clip_deleted"), report)
            with contextlib.suppress(TimeoutError):
                await within(self.retention_due.wait(), 5.0)

    async def status_loop(self) -> None:
        """STATUS= for systemctl and a retained summary on the bus, on change and periodically."""
        self.watchdog.register("status", max_silence=60.0)
        while True:
            self.watchdog.beat("status")
            self.status_due.clear()
            system.status(self.status_line())
            self.publish(VIDEO_STATUS, self.status(), retain=True)
            with contextlib.suppress(TimeoutError):
                await within(self.status_due.wait(), STATUS_EVERY_S)

    def status_line(self) -> str:
        if not self.cameras:
            return "no camera configured"
        parts = []
        for cid, cam in self.cameras.items():
            state = {True: "up", False: f"down ({cam.reason})", None: "opening"}[cam.up]
            parts.append(f"{cid} {state}")
        return "cameras: " + ", ".join(parts)

    def status(self) -> dict[str, Any]:
        return {
            "v": 1,
            "running": True,
            "site": self.cfg.site.id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "cameras": {cid: cam.status() for cid, cam in self.cameras.items()},
            "dropped_messages": self.dropped,
            "live": self.live.status(),
        }

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        loops: dict[str, Any] = {
            "publisher": self.publisher(),
            "alarms": self.alarms(),
            "retention": self.retention(),
            "status": self.status_loop(),
            "watchdog": self.watchdog.run(),
        }
        self.watchdog.register("live", max_silence=30.0)
        loops.update(self.live.loops(self._beater("live")))
        loops.update(self.maintenance.loops())
        if self.sender:
            self.watchdog.register("delivery", max_silence=150.0)
            self.watchdog.register("delivery-link", max_silence=30.0)
            loops.update(self.sender.loops())
        for cid, cam in self.cameras.items():
            self.watchdog.register(f"camera:{cid}", max_silence=10.0)
            loops[f"camera:{cid}"] = self.maintenance.camera_loop(cid)
            loops[f"tick:{cid}"] = cam.ticker(self._beater(f"camera:{cid}"))
        await supervise(loops)

    def _beater(self, name: str) -> Callable[[], None]:
        return lambda: self.watchdog.beat(name)

    async def wait_ready(self) -> None:
        """Every camera delivered something or reported a failure (its source then retries)."""
        waits = [cam.first_item.wait() for cam in self.cameras.values()]
        try:
            await within(asyncio.gather(*waits), READY_WAIT_S)
        except TimeoutError:
            slow = [c for c, cam in self.cameras.items() if not cam.first_item.is_set()]
            log.warning("camera(s) %s still opening after %.0f s", ", ".join(slow), READY_WAIT_S)

    async def close(self) -> None:
        """After the loops stopped: end live sessions, write the open clips, flush, close."""
        with contextlib.suppress(TimeoutError):
            await within(self.live.close(), SHUTDOWN_CLIPS_S)
        try:
            await within(self._finish_clips(), SHUTDOWN_CLIPS_S)
        except TimeoutError:
            log.error("clips still being written after %.0f s: abandoned", SHUTDOWN_CLIPS_S)
            for cam in self.cameras.values():
                cam.stop_saves()
        for cid in self.cameras:
            self.publish(
                camera_topic(cid, "state"),
                {"v": 1, "camera": cid, "up": False, "reason": "edge-video stopped"},
                retain=True,
            )
        self.publish(VIDEO_STATUS, {**self.status(), "running": False}, retain=True)
        with contextlib.suppress(TimeoutError):
            await within(self._flush(), FLUSH_S)
        await asyncio.gather(*(cam.close() for cam in self.cameras.values()))
        await self.bus.close()
        if self.sender:
            self.sender.close()
        self.index.close()

    async def _finish_clips(self) -> None:
        await asyncio.gather(*(cam.finish_all() for cam in self.cameras.values()))

    async def _flush(self) -> None:
        while self.outq:
            topic, payload, retain = self.outq.popleft()
            try:
                await self.bus.publish(topic, payload, retain=retain, timeout=FLUSH_S)
            except BusError as exc:
                log.warning("%d video message(s) not sent at shutdown: %s", len(self.outq) + 1, exc)
                return


def _clip_report(record: ClipRecord, why: str) -> dict[str, Any]:
    """What edge-alarm journals (CLIP_SAVED / CLIP_DELETED): every deletion is accounted for."""
    return {
        "v": 1,
        "clip_id": record.id,
        "camera": record.camera,
        "events": record.event_ids,
        "start": record.start_ts,
        "bytes": record.bytes,
        "why": why,
    }


def _deleted(record: ClipRecord, reason: str) -> None:
    """Runs in the retention thread: logs; the service then reports it for the journal."""
    log.info(
        "clip %s of camera %s (%s, events %s) deleted: %s",
        record.id,
        record.camera,
        record.start_ts,
        ", ".join(record.event_ids) or "none",
        "older than the retention period" if reason == "retention" else "disk quota reached",
    )


async def run_video(cfg: SiteConfig) -> int:
    """Entry point of `edge run video`: returns the process exit code."""
    service = VideoService(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
    await service.bus.start()
    runner = asyncio.create_task(service.run(), name="service")
    stopper = asyncio.create_task(service.stop.wait(), name="stop")
    ready = asyncio.create_task(service.wait_ready(), name="ready")
    try:
        await asyncio.wait({runner, stopper, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            system.ready(service.status_line())
            log.info(
                "edge-video %s ready: site %s, %s",
                __version__,
                cfg.site.id,
                service.status_line(),
            )
        ready.cancel()
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        system.stopping()
        log.info("edge-video stopping: writing open clips")
        for task in (runner, stopper, ready):
            task.cancel()
        await asyncio.gather(runner, stopper, ready, return_exceptions=True)
        await service.close()
    if runner.done() and not runner.cancelled() and runner.exception():
        return 70
    return 0
