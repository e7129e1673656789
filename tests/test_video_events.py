"""edge-video's reports become journal events once per change (edge.alarm.video_events)."""

from __future__ import annotations

import json
from typing import Any

from edge.alarm.video_events import VideoEvents
from edge.bus import Message
from edge.events import Category, Event, Kind


def msg(camera: str, what: str, body: dict[str, Any] | bytes) -> Message:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Message(f"edge/video/{camera}/{what}", payload, retain=False, qos=1)


def feed(video: VideoEvents, *messages: Message) -> list[Event]:
    return [e for m in messages if (e := video.event_of(m)) is not None]


def test_video_loss_and_restore_once_each() -> None:
    video = VideoEvents(lambda e: None, armed=lambda: False)
    events = feed(
        video,
        msg("gate", "state", {"up": True}),
        msg("gate", "state", {"up": False, "reason": "rtsp timeout"}),
        msg("gate", "state", {"up": False, "reason": "rtsp timeout"}),  # retained repeat
        msg("gate", "state", {"up": True}),
    )
    assert [e.kind for e in events] == [Kind.VIDEO_LOSS, Kind.VIDEO_RESTORE]
    assert events[0].details == {"camera": "gate", "reason": "rtsp timeout"}
    assert events[0].category is Category.FAULT and events[0].kind.spec.transmit


def test_camera_faults_are_tracked_per_fault() -> None:
    video = VideoEvents(lambda e: None, armed=lambda: False)
    events = feed(
        video,
        msg("yard", "health", {"fault": "covered", "active": True, "value": 3.0}),
        msg("yard", "health", {"fault": "defocus", "active": True, "value": 0.2}),
        msg("yard", "health", {"fault": "covered", "active": False, "value": 90.0}),
        msg("yard", "health", {"fault": "covered", "active": False, "value": 90.0}),
    )
    assert [(e.kind, e.details["fault"]) for e in events] == [
        (Kind.CAMERA_FAULT, "covered"),
        (Kind.CAMERA_FAULT, "defocus"),
        (Kind.CAMERA_FAULT_RESTORE, "covered"),
    ]


def test_motion_alarm_only_in_alarm_zones_while_armed() -> None:
    armed = {"now": False}
    video = VideoEvents(lambda e: None, armed=lambda: armed["now"])
    start = {"zone": "fence", "action": "alarm", "state": "start", "peak_cells": 7}
    assert feed(video, msg("yard", "motion", start)) == []  # disarmed: a tag only
    armed["now"] = True
    tag = {**start, "action": "tag"}
    end = {**start, "state": "end"}
    events = feed(
        video, msg("yard", "motion", tag), msg("yard", "motion", start), msg("yard", "motion", end)
    )
    assert [e.kind for e in events] == [Kind.VIDEO_MOTION]
    assert events[0].details == {"camera": "yard", "zone": "fence", "cells": 7}
    assert events[0].category is Category.ALARM


def test_malformed_reports_are_ignored() -> None:
    video = VideoEvents(lambda e: None, armed=lambda: True)
    assert feed(video, msg("yard", "health", b"\xff not json"), msg("yard", "other", {})) == []


def test_every_clip_kept_or_deleted_is_journaled() -> None:
    video = VideoEvents(lambda e: None, armed=lambda: False)
    base = {"clip_id": "c1", "events": ["e1"], "start": "2026-11-22T08:00:00.000Z", "bytes": 9}
    events = feed(
        video,
        msg("yard", "clip_saved", {**base, "why": "saved"}),
        msg("yard", "clip_deleted", {**base, "why": "quota"}),
    )
    assert [e.kind for e in events] == [Kind.CLIP_SAVED, Kind.CLIP_DELETED]
    assert events[1].details == {"camera": "yard", **base, "why": "quota"}
    assert not events[1].kind.spec.transmit
