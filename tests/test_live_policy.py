"""The live-view access policy (CNIL proportionality) decided from journal events.

Timestamps are written by hand in the journal's own format (UTC, milliseconds, Z), so every
window boundary is exact; LiveAccess is checked over a real journal in a temporary file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.live import LiveConfig
from edge.events import Event, Kind
from edge.journal import Journal
from edge.journal_schema import iso_utc, parse_iso
from edge.live_policy import SCAN_LIMIT, LiveAccess, is_alarm, lookback, refusal

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
WINDOW_MIN = 15

# Written out from edge/events.py (categories alarm and tamper, restores excluded), so that a
# kind changing category is noticed here.
ALARMS = {
    Kind.BURGLARY,
    Kind.BURGLARY_CONFIRMED,
    Kind.FIRE,
    Kind.PANIC,
    Kind.HOLDUP,
    Kind.TAMPER,
    Kind.FLOOD,
    Kind.FREEZER,
    Kind.TECHNICAL,
    Kind.VIDEO_MOTION,
}
NOT_ALARMS = [
    Kind.BURGLARY_RESTORE,
    Kind.TAMPER_RESTORE,
    Kind.FIRE_RESTORE,
    Kind.BURGLARY_CANCEL,
    Kind.DISARMED,
    Kind.ARMED,
    Kind.MAINS_LOSS,
    Kind.VIDEO_LOSS,
    Kind.CAMERA_FAULT,
    Kind.LIVE_STARTED,
    Kind.SERVICE_STARTED,
    Kind.LOOP_FAULT,
]


def live(policy: str, window: int = WINDOW_MIN) -> LiveConfig:
    return LiveConfig.model_validate({"policy": policy, "window_minutes": window})


def at(minutes_before_now: float) -> str:
    return iso_utc(NOW - dt.timedelta(minutes=minutes_before_now))


def ev(kind: Kind, minutes_before_now: float, partition: str | None = "a") -> Event:
    return Event(kind, zone_id="z1", partition=partition, ts=at(minutes_before_now))


def test_timestamps_are_in_the_journal_format() -> None:
    assert at(0) == "2026-01-01T12:00:00.000Z"
    assert parse_iso(at(15)) == NOW - dt.timedelta(minutes=15)


def test_alarm_kinds_are_the_alarm_and_tamper_categories_without_restores() -> None:
    assert {k for k in Kind if is_alarm(Event(k))} == ALARMS


def test_always_allows_without_any_event() -> None:
    assert refusal(live("always"), [], NOW) is None


# -- after_alarm ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [Kind.BURGLARY, Kind.TAMPER, Kind.VIDEO_MOTION, Kind.FIRE])
def test_after_alarm_allows_inside_the_window(kind: Kind) -> None:
    assert refusal(live("after_alarm"), [ev(kind, 14)], NOW) is None
    assert refusal(live("after_alarm"), [ev(kind, WINDOW_MIN)], NOW) is None  # boundary


@pytest.mark.parametrize("kind", [Kind.BURGLARY, Kind.TAMPER])
def test_after_alarm_refuses_outside_the_window_and_says_why(kind: Kind) -> None:
    why = refusal(live("after_alarm"), [ev(kind, WINDOW_MIN + 0.001)], NOW)
    assert why is not None
    assert "live.policy = after_alarm" in why and f"{WINDOW_MIN} min" in why


@pytest.mark.parametrize("kind", NOT_ALARMS)
def test_after_alarm_is_not_opened_by_restores_or_other_events(kind: Kind) -> None:
    assert refusal(live("after_alarm"), [ev(kind, 1)], NOW) is not None


def test_after_alarm_window_follows_the_setting() -> None:
    events = [ev(Kind.BURGLARY, 50)]
    assert refusal(live("after_alarm", 60), events, NOW) is None
    assert refusal(live("after_alarm", 45), events, NOW) is not None


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(sorted(ALARMS) + NOT_ALARMS),
            st.integers(0, 3 * 60 * 60 * 1000),  # ms before now
        ),
        max_size=12,
    ),
    window=st.integers(1, 120),
)
def test_property_after_alarm_allowed_iff_an_alarm_is_in_the_window(
    events: list[tuple[Kind, int]], window: int
) -> None:
    journal = [
        Event(k, partition="a", ts=iso_utc(NOW - dt.timedelta(milliseconds=ms))) for k, ms in events
    ]
    expected = any(k in ALARMS and ms <= window * 60_000 for k, ms in events)
    assert (refusal(live("after_alarm", window), journal, NOW) is None) is expected


# -- incident ---------------------------------------------------------------------------------
def incident(events: list[Event], minutes_after: float = 0.0) -> str | None:
    return refusal(live("incident"), events, NOW + dt.timedelta(minutes=minutes_after))


def test_incident_stays_open_until_its_partition_is_disarmed() -> None:
    alarm = ev(Kind.BURGLARY, 300, "a")
    assert incident([alarm]) is None, "an open incident allows live view however old"
    assert incident([alarm, ev(Kind.DISARMED, 200, "b")]) is None, "disarming b closes nothing"
    assert incident([alarm, ev(Kind.BURGLARY_RESTORE, 250, "a")]) is None, "a restore is no close"
    closed = [alarm, ev(Kind.DISARMED, 200, "b"), ev(Kind.DISARMED, 10, "a")]
    assert incident(closed) is None  # 10 min after the close
    assert incident(closed, minutes_after=5) is None  # exactly the window after
    why = incident(closed, minutes_after=5.001)
    assert why is not None
    assert "live.policy = incident" in why and f"{WINDOW_MIN} min" in why


def test_tamper_opens_an_incident_and_its_restore_does_not() -> None:
    assert incident([ev(Kind.TAMPER, 120, "a")]) is None
    assert incident([ev(Kind.TAMPER_RESTORE, 1, "a")]) is not None


def test_site_wide_incident_is_closed_by_any_disarm() -> None:
    tamper = ev(Kind.TAMPER, 60, None)
    assert incident([tamper]) is None
    events = [tamper, ev(Kind.DISARMED, 30, "b")]  # closed 30 min before now
    assert incident(events, minutes_after=-20) is None  # 10 min after the close
    assert incident(events, minutes_after=-15) is None  # the window's end
    assert incident(events) is not None


def test_one_disarm_closes_only_its_own_incident() -> None:
    events = [ev(Kind.BURGLARY, 60, "a"), ev(Kind.FIRE, 50, "b"), ev(Kind.DISARMED, 40, "a")]
    assert incident(events) is None, "b's fire is still open"
    events.append(ev(Kind.DISARMED, 30, "b"))
    assert incident(events) is not None


def test_a_disarm_with_nothing_open_opens_no_window() -> None:
    assert incident([ev(Kind.DISARMED, 1, "a")]) is not None
    assert incident([]) is not None


def test_a_new_alarm_after_the_close_reopens_the_incident() -> None:
    events = [ev(Kind.BURGLARY, 120, "a"), ev(Kind.DISARMED, 100, "a"), ev(Kind.BURGLARY, 90, "a")]
    assert incident(events) is None


# -- LiveAccess over a real journal -----------------------------------------------------------
def journal_access(tmp: Path, policy: str, events: list[Event]) -> tuple[LiveAccess, list[str]]:
    journal = Journal(tmp / "journal.db")
    journal.append_many(events)
    asked: list[str] = []

    def recent(since: str) -> list[Event]:
        asked.append(since)
        return journal.query(since_ts=since, limit=SCAN_LIMIT)

    return LiveAccess(live(policy), recent, now=lambda: NOW), asked


def test_live_access_after_alarm_reads_the_window_from_the_journal(tmp_path: Path) -> None:
    access, asked = journal_access(tmp_path, "after_alarm", [ev(Kind.BURGLARY, 14)])
    assert access.check() is None
    assert [parse_iso(s) for s in asked] == [NOW - dt.timedelta(minutes=WINDOW_MIN)]


def test_live_access_refuses_an_alarm_just_before_the_window(tmp_path: Path) -> None:
    access, _ = journal_access(tmp_path, "after_alarm", [ev(Kind.BURGLARY, WINDOW_MIN + 0.001)])
    why = access.check()
    assert why is not None and "live.policy = after_alarm" in why


def test_live_access_incident_looks_back_a_day_plus_the_window(tmp_path: Path) -> None:
    events = [ev(Kind.BURGLARY, 23 * 60, "a"), ev(Kind.DISARMED, 10, "b")]
    access, asked = journal_access(tmp_path, "incident", events)
    assert access.check() is None, "an incident opened 23 h ago and never closed is still open"
    assert [parse_iso(s) for s in asked] == [NOW - lookback(live("incident"))]
    assert lookback(live("incident")) == dt.timedelta(hours=24, minutes=WINDOW_MIN)


def test_live_access_always_does_not_read_the_journal() -> None:
    def recent(since: str) -> list[Event]:
        raise AssertionError("the journal must not be read for policy always")

    assert LiveAccess(live("always"), recent, now=lambda: NOW).check() is None
