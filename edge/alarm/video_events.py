"""Journal what edge-video reports: video loss, camera faults, motion in alarm zones.

edge-video cannot write the journal (edge-alarm is its only writer), so it publishes on the
box bus and this loop turns the reports into journal events, which then travel like any
other event (outbox, central station). Video has no SIA / Contact ID codes, so these
events go over MQTT only.

- ``edge/video/<camera>/state`` (retained): ``up`` false → VIDEO_LOSS, back → VIDEO_RESTORE.
- ``edge/video/<camera>/health``: a fault raised → CAMERA_FAULT, cleared → its restore.
- ``edge/video/<camera>/clip_saved`` and ``clip_deleted``: CLIP_SAVED / CLIP_DELETED (local
  events: every clip kept or deleted, and why — retention or quota — is in the journal; a
  clip with less pre-alarm than configured says why in ``note``); ``clip_missed``:
  CLIP_MISSED, an alarm that got no clip and why (the camera had no video yet…).
- ``edge/video/<camera>/live``: the live-view audit trail — every session ``started`` and
  ``ended`` (operator, camera, reason, start, end, why), every refused request, every
  tele-action → LIVE_STARTED / LIVE_ENDED / LIVE_REFUSED / LIVE_ACTION. The LAN web server
  summarises refused logins (at most two rows per address per minute: ``count``, ``users``
  tried, ``start`` / ``end``), on ``edge/video/_/live`` when no camera was asked for.
- ``edge/video/<camera>/motion``: the start of motion in a zone whose action is ``alarm`` is
  a virtual alarm input → VIDEO_MOTION, but only while a partition is set (a tag zone, or
  motion while everything is disarmed, only marks clips).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge.bus import Bus, Message
from edge.errors import CommandError
from edge.events import Event, Kind

log = logging.getLogger(__name__)

VIDEO_ALL = "edge/video/+/+"
LIVE_KINDS = {
    "started": Kind.LIVE_STARTED,
    "ended": Kind.LIVE_ENDED,
    "refused": Kind.LIVE_REFUSED,
    "action": Kind.LIVE_ACTION,
}
LIVE_KEYS = (
    "session", "camera", "operator", "reason", "via", "remote", "start", "end", "duration_s",
    "why", "connected", "frames", "code", "do", "target", "op", "ok", "count", "users",
    "cameras", "addresses",
)  # fmt: skip


class VideoEvents:
    """Turns edge-video's bus reports into journal events, once per change."""

    def __init__(self, journal_event: Callable[[Event], None], armed: Callable[[], bool]) -> None:
        self.journal_event = journal_event
        self.armed = armed
        self.lost: set[str] = set()
        self.faults: set[tuple[str, str]] = set()

    async def run(self, bus: Bus) -> None:
        async for msg in bus.subscribe(VIDEO_ALL):
            event = self.event_of(msg)
            if event is not None:
                self.journal_event(event)

    def event_of(self, msg: Message) -> Event | None:
        parts = msg.topic.split("/")
        try:
            body = msg.json()
        except CommandError as exc:
            log.warning("ignored a malformed video report on %s: %s", msg.topic, exc)
            return None
        if len(parts) != 4 or not isinstance(body, dict):
            return None
        camera, what = parts[2], parts[3]
        handler = {
            "state": self._state,
            "health": self._health,
            "motion": self._motion,
            "clip_saved": self._clip,
            "clip_deleted": self._clip,
            "clip_missed": self._clip,
            "live": self._live,
        }.get(what)
        return handler(camera, body) if handler else None

    def _state(self, camera: str, body: dict[str, Any]) -> Event | None:
        up = bool(body.get("up"))
        if not up and camera not in self.lost:
            self.lost.add(camera)
            return Event(Kind.VIDEO_LOSS, details={"camera": camera, "reason": body.get("reason")})
        if up and camera in self.lost:
            self.lost.discard(camera)
            return Event(Kind.VIDEO_RESTORE, details={"camera": camera})
        return None

    def _health(self, camera: str, body: dict[str, Any]) -> Event | None:
        key = (camera, str(body.get("fault")))
        details = {"camera": camera, "fault": key[1], "value": body.get("value")}
        if body.get("active") and key not in self.faults:
            self.faults.add(key)
            return Event(Kind.CAMERA_FAULT, details=details)
        if not body.get("active") and key in self.faults:
            self.faults.discard(key)
            return Event(Kind.CAMERA_FAULT_RESTORE, details=details)
        return None

    def _clip(self, camera: str, body: dict[str, Any]) -> Event | None:
        kind = Kind.CLIP_SAVED if body.get("why") == "saved" else Kind.CLIP_DELETED
        if "event_id" in body:  # clip_missed: no clip for that alarm, and why
            kind = Kind.CLIP_MISSED
        keys = ("clip_id", "events", "event_id", "start", "bytes", "why", "motion", "note")
        details = {k: body[k] for k in keys if k in body}
        return Event(kind, details={"camera": camera, **details})

    def _live(self, camera: str, body: dict[str, Any]) -> Event | None:
        kind = LIVE_KINDS.get(str(body.get("event")))
        if kind is None:
            return None
        details = {k: body[k] for k in LIVE_KEYS if body.get(k) not in (None, "")}
        if camera != "_":  # "_": not about one camera (a refused login on the LAN page)
            details.setdefault("camera", camera)
        return Event(kind, details=details)

    def _motion(self, camera: str, body: dict[str, Any]) -> Event | None:
        if body.get("action") != "alarm" or body.get("state") != "start" or not self.armed():
            return None
        return Event(
            Kind.VIDEO_MOTION,
            details={"camera": camera, "zone": body.get("zone"), "cells": body.get("peak_cells")},
        )
