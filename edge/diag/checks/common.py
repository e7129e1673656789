"""Small helpers the check families share: durations in words, the services' statuses."""

from __future__ import annotations

import datetime as dt
from typing import Any

from edge.diag.checks import journal_view
from edge.diag.sources import Sources
from edge.words import duration as duration  # the checks' words for times

MB = 1024 * 1024


def alarm_status(src: Sources) -> dict[str, Any] | None:
    """edge-alarm's status when it is running (None when down, or the bus could not be read).

    A status is also taken as stale when the journal's last start or stop record is a stop
    (edge-alarm says ``running: false`` when it stops, but a box broker that was down then
    still holds the status before it).
    """
    if src.bus_error is not None or src.alarm is None or src.alarm.get("running") is False:
        return None
    if stopped(src):
        return None
    return src.alarm


def stopped(src: Sources) -> bool:
    """Does edge-alarm's journal end with a clean stop (no start after it)?"""
    try:
        rows = journal_view.recent(src, "service_started", "service_stopped")
    except journal_view.JournalUnreadable:
        return False
    return bool(rows) and rows[-1].kind == "service_stopped"


def video_status(src: Sources) -> dict[str, Any] | None:
    """edge-video's status when it is running."""
    if src.bus_error is not None or src.video is None or src.video.get("running") is False:
        return None
    return src.video


def why_no_alarm(src: Sources) -> str:
    """Why edge-alarm's status is missing, for an ``unknown`` finding."""
    if src.bus_error is not None:
        return "the box broker does not answer"
    if src.alarm is not None and (src.alarm.get("running") is False or stopped(src)):
        return "edge-alarm is stopped (see service.alarm)"
    return "edge-alarm is not running (see service.alarm)"


def why_no_video(src: Sources) -> str:
    if src.bus_error is not None:
        return "the box broker does not answer"
    return "edge-video is not running (see service.video)"


def epoch(value: Any) -> float | None:
    """An ISO 8601 time (a Z suffix or an offset; none means UTC) or epoch seconds, as epoch
    seconds; None for anything else (a field a service does not publish yet, or garbage)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def number(value: Any) -> float | None:
    """A published figure, or None when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d")
