"""The heartbeat: on a fixed grid without drift, no burst after a pause; its payload; and the
`[heartbeat]` / `[outbox]` configuration bounds."""

from __future__ import annotations

import json
import random
import re

import pytest
from pydantic import ValidationError

from edge.config.uplink import HeartbeatConfig, OutboxConfig
from edge.uplink.heartbeat import HeartbeatScheduler, heartbeat_payload


class FakeClock:
    def __init__(self, now: float = 5_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- scheduler ------------------------------------------------------------------------------
def test_first_beat_is_due_at_once() -> None:
    clock = FakeClock()
    beats = HeartbeatScheduler(60, clock)
    assert beats.due()
    assert beats.fired() == 1
    assert not beats.due()
    assert beats.next_due() == 5_060.0


def test_no_drift_over_a_thousand_late_beats() -> None:
    """Every send is late by up to 2 s; beat k is still due at start + k * interval."""
    clock, rng = FakeClock(), random.Random(5)
    interval = 0.1 + 0.2  # not exact in binary: repeated addition would drift
    beats = HeartbeatScheduler(interval, clock)
    start = clock.now
    for k in range(1000):
        assert beats.next_due() == start + k * interval  # exactly: nothing accumulates
        clock.now = beats.next_due() + rng.uniform(0.0, 0.9 * interval)
        assert beats.due()
        assert beats.fired() == k + 1
        assert not beats.due()
    assert beats.next_due() == start + 1000 * interval


def test_missed_beats_are_skipped_after_a_pause() -> None:
    clock = FakeClock(0.0)
    beats = HeartbeatScheduler(60, clock)
    beats.fired()
    clock.now = 60.0 * 10.5  # the loop was blocked for ten beats
    assert beats.due()
    assert beats.fired() == 2
    assert not beats.due()  # no burst of the nine others
    assert beats.next_due() == 660.0  # back on the grid
    clock.now = 660.0
    assert beats.due() and beats.fired() == 3


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="> 0"):
        HeartbeatScheduler(0)


# -- payload --------------------------------------------------------------------------------
def test_payload_shape() -> None:
    faults = [{"kind": "mains_loss", "since": "2026-11-22T09:00:00.000Z"}]
    body = heartbeat_payload(
        seq=7,
        site="shop-12",
        uptime_s=3600.04,
        armed={"main": "armed", "annex": "disarmed"},
        open_faults=faults,
        outbox={
            "mqtt": {"depth": 0, "oldest_s": None, "rejected": 0},
            "dc09": {"depth": 3, "oldest_s": 12.345, "rejected": 1},
        },
        versions={"edge": "0.1.0"},
        ts="2026-11-22T10:00:00.000Z",
    )
    assert body == {
        "v": 1,
        "site": "shop-12",
        "seq": 7,
        "ts": "2026-11-22T10:00:00.000Z",
        "uptime_s": 3600.0,
        "armed": {"annex": "disarmed", "main": "armed"},
        "faults": faults,
        "outbox": {
            "dc09": {"depth": 3, "oldest_s": 12.3, "rejected": 1},
            "mqtt": {"depth": 0, "oldest_s": None, "rejected": 0},
        },
        "versions": {"edge": "0.1.0"},
    }
    faults.append({"kind": "low_battery"})
    assert len(body["faults"]) == 1  # a copy: later changes do not leak into a sent beat
    json.dumps(body)


def test_payload_ts_defaults_to_utc_now() -> None:
    body = heartbeat_payload(
        seq=1, site="s1", uptime_s=0, armed={}, open_faults=[], outbox={}, versions={}
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["ts"])
    with pytest.raises(ValueError, match="starts at 1"):
        heartbeat_payload(
            seq=0, site="s1", uptime_s=0, armed={}, open_faults=[], outbox={}, versions={}
        )


# -- configuration --------------------------------------------------------------------------
def test_heartbeat_interval_bounds() -> None:
    assert HeartbeatConfig().interval_s == 60
    assert HeartbeatConfig(interval_s=86_400).interval_s == 86_400
    for bad in (9, 86_401):
        with pytest.raises(ValidationError, match="interval_s"):
            HeartbeatConfig(interval_s=bad)
    with pytest.raises(ValidationError, match="extra"):
        HeartbeatConfig(interval=60)  # type: ignore[call-arg]


def test_outbox_config_backoff_must_be_ordered() -> None:
    assert OutboxConfig().backoff_s == (5.0, 300.0)
    with pytest.raises(ValidationError, match="lower the minimum"):
        OutboxConfig(backoff_min_s=120, backoff_max_s=60)
    with pytest.raises(ValidationError, match="max_rows"):
        OutboxConfig(max_rows=10)
