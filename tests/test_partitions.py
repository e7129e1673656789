"""Partition-level rules of the alarm panel: arming and its refusal, exit and entry delays,
part-set, sequential confirmation, siren rule, disarm and cancel, schedules, restart."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from edge.alarm.panel import AlarmPanel, Outcome, OutputAction
from edge.config.site import SiteConfig
from edge.errors import CommandError
from edge.events import Kind
from edge.loops import LoopState

N, A, CUT = LoopState.NORMAL, LoopState.ALARM, LoopState.TAMPER_CUT
PARIS = dt.timezone(dt.timedelta(hours=1))
MONDAY = dt.datetime(2024, 1, 1, tzinfo=PARIS)  # 2024-01-01 is a Monday

ZONES: list[dict[str, Any]] = [
    {"id": "door", "name": "Front door", "type": "delayed", "part_set": True},
    {"id": "hall", "name": "Hall", "type": "instant"},
    {"id": "office", "type": "instant", "part_set": True},
    {"id": "garage", "type": "delayed", "entry_delay_s": 10},
    {"id": "smoke", "type": "fire"},
]


def site(
    siren: dict[str, Any] | None = None, zones: list[dict[str, Any]] | None = None, **part: Any
) -> SiteConfig:
    """One partition ``main`` (exit 0 s, entry 30 s unless overridden) with ZONES."""
    partition = {"id": "main", "exit_delay_s": 0, "entry_delay_s": 30, **part}
    return SiteConfig.model_validate(
        {
            "site": {"id": "test-site"},
            "partitions": [partition],
            "zones": [
                {"input": {"kind": "gpio", "pin": 2 + i}, **z}
                for i, z in enumerate(ZONES if zones is None else zones)
            ],
            "outputs": [{"id": "siren", "pin": 27}],
            "siren": {"output": "siren", "cutoff_min": 2} if siren is None else siren,
        }
    )


def kinds(out: Outcome) -> list[Kind]:
    return [e.kind for e in out.events]


def state(panel: AlarmPanel) -> str:
    return str(panel.partition_status("main")["state"])


# -- arming ----------------------------------------------------------------------------------
def test_exit_delay_then_armed_and_nothing_during_exit() -> None:
    panel = AlarmPanel(site(exit_delay_s=20))
    out = panel.arm("main", "full", 100.0, user="alice")
    assert kinds(out) == [Kind.EXIT_DELAY]
    assert out.events[0].details == {
        "mode": "full",
        "exit_delay_s": 20,
        "source": "command",
        "user": "alice",
    }
    assert state(panel) == "exit_delay"
    assert panel.next_deadline() == 120.0
    assert kinds(panel.loop_changed("hall", A, 105.0)) == []
    assert kinds(panel.loop_changed("hall", N, 106.0)) == []
    assert kinds(panel.loop_changed("door", A, 107.0)) == []
    assert kinds(panel.loop_changed("door", N, 108.0)) == []
    out = panel.tick(121.5, MONDAY)
    assert kinds(out) == [Kind.ARMED]
    assert out.events[0].details == {"mode": "full", "source": "command", "user": "alice"}
    assert out.events[0].mono_ns == 120 * 10**9  # at the deadline, not at the late tick
    assert state(panel) == "armed_full"


def test_arming_an_armed_partition_is_ok_without_event() -> None:
    panel = AlarmPanel(site())
    assert kinds(panel.arm("main", "full", 0.0)) == [Kind.ARMED]
    again = panel.arm("main", "full", 1.0)
    assert again.ok and again.events == []


def test_arming_in_the_other_mode_is_refused() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "part", 0.0)
    out = panel.arm("main", "full", 1.0)
    assert not out.ok
    assert "disarm it first" in out.reason
    assert kinds(out) == [Kind.ARM_REFUSED]


def test_refused_arming_names_the_open_zone() -> None:
    panel = AlarmPanel(site())
    panel.loop_changed("hall", A, 0.0)
    out = panel.arm("main", "full", 1.0, user="alice")
    assert not out.ok
    assert out.reason == (
        "cannot arm main: zone hall (Hall) is open; close it or force-arm to bypass it"
    )
    assert kinds(out) == [Kind.ARM_REFUSED]
    assert out.events[0].details["zones"] == ["hall"]
    assert out.events[0].details["user"] == "alice"
    assert state(panel) == "disarmed"


def test_refusal_lists_every_zone_not_ready() -> None:
    panel = AlarmPanel(site())
    panel.loop_changed("hall", A, 0.0)
    panel.loop_changed("office", CUT, 0.0)
    panel.loop_changed("smoke", A, 0.0)  # a 24 h zone never blocks arming
    out = panel.arm("main", "full", 1.0)
    assert out.reason == (
        "cannot arm main: zone hall (Hall) is open and zone office is tampered (cut); "
        "close them or force-arm to bypass them"
    )


def test_force_arm_bypasses_open_zones_for_the_arming_period() -> None:
    panel = AlarmPanel(site())
    panel.loop_changed("hall", A, 0.0)
    out = panel.arm("main", "full", 1.0, force=True, user="alice")
    assert out.ok
    assert kinds(out) == [Kind.BYPASS, Kind.ARMED]
    assert out.events[0].zone_id == "hall"
    assert out.events[0].details["reason"] == "force-arm"
    assert kinds(panel.loop_changed("hall", N, 2.0)) == []
    assert kinds(panel.loop_changed("hall", A, 3.0)) == []
    out = panel.disarm("main", 4.0)
    assert kinds(out) == [Kind.DISARMED, Kind.UNBYPASS]
    assert out.events[1].details["was"] == "force-arm"
    assert panel.arm("main", "full", 5.0).ok is False  # the hall is still open


def test_zones_open_at_end_of_exit_are_processed_as_just_tripped() -> None:
    panel = AlarmPanel(site(exit_delay_s=30))
    panel.arm("main", "full", 0.0)
    panel.loop_changed("door", A, 10.0)
    panel.loop_changed("hall", A, 20.0)
    out = panel.tick(30.0, MONDAY)
    assert kinds(out) == [Kind.ARMED, Kind.ENTRY_DELAY, Kind.BURGLARY]
    assert [e.zone_id for e in out.events[1:]] == ["door", "hall"]


def test_part_set_only_part_zones_are_active() -> None:
    panel = AlarmPanel(site())
    panel.loop_changed("hall", A, 0.0)  # not a part-set zone: does not block part-set
    out = panel.arm("main", "part", 1.0)
    assert kinds(out) == [Kind.PART_SET]
    assert state(panel) == "armed_part"
    assert kinds(panel.loop_changed("hall", N, 2.0)) == []
    assert kinds(panel.loop_changed("hall", A, 3.0)) == []
    assert kinds(panel.loop_changed("office", A, 4.0)) == [Kind.BURGLARY]


def test_unknown_partition_and_mode_are_command_errors() -> None:
    panel = AlarmPanel(site())
    with pytest.raises(CommandError, match="unknown partition 'upstairs': partitions are main"):
        panel.arm("upstairs", "full", 0.0)
    with pytest.raises(CommandError, match="unknown partition"):
        panel.disarm("upstairs", 0.0)
    with pytest.raises(CommandError, match="use full or part"):
        panel.arm("main", "night", 0.0)  # type: ignore[arg-type]


# -- burglary and entry delay ----------------------------------------------------------------
def test_instant_zone_alarm_sounds_the_siren() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    out = panel.loop_changed("hall", A, 5.0, {"volts": 2.2})
    assert kinds(out) == [Kind.BURGLARY]
    ev = out.events[0]
    assert (ev.zone_id, ev.zone_name, ev.partition, ev.confirmed) == (
        "hall",
        "Hall",
        "main",
        False,
    )
    assert ev.details["volts"] == 2.2
    assert out.actions == [OutputAction("siren", "on", "burglary zone hall")]
    assert state(panel) == "alarm"


def test_disarm_during_entry_delay_means_nothing_happened() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    out = panel.loop_changed("door", A, 10.0)
    assert kinds(out) == [Kind.ENTRY_DELAY]
    assert out.events[0].details["delay_s"] == 30
    assert state(panel) == "entry_delay"
    assert panel.next_deadline() == 40.0
    out = panel.disarm("main", 35.0)
    assert kinds(out) == [Kind.DISARMED]
    assert out.actions == []
    assert kinds(panel.tick(100.0, MONDAY)) == []


def test_entry_delay_expiry_is_a_burglary_at_the_deadline() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    panel.loop_changed("garage", A, 10.0)  # zone override: 10 s
    assert kinds(panel.tick(19.9, MONDAY)) == []
    out = panel.tick(25.0, MONDAY)  # a late tick
    assert kinds(out) == [Kind.BURGLARY]
    assert out.events[0].zone_id == "garage"
    assert out.events[0].mono_ns == 20 * 10**9
    assert out.events[0].details == {"cause": "entry delay expired"}
    assert out.actions == [OutputAction("siren", "on", "burglary zone garage")]


def test_entry_timer_is_not_extended_by_other_delayed_zones() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    panel.loop_changed("garage", A, 10.0)
    assert kinds(panel.loop_changed("door", A, 15.0)) == []  # joins the running delay
    out = panel.tick(20.0, MONDAY)
    assert [(e.kind, e.zone_id) for e in out.events] == [
        (Kind.BURGLARY, "garage"),
        (Kind.BURGLARY_CONFIRMED, "door"),
    ]


def test_door_closed_before_expiry_gets_its_restore_at_once() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    panel.loop_changed("door", A, 1.0)
    panel.loop_changed("door", N, 3.0)
    out = panel.tick(31.0, MONDAY)
    assert kinds(out) == [Kind.BURGLARY, Kind.BURGLARY_RESTORE]


def test_instant_zone_during_entry_delay_alarms_at_once_and_confirms_the_door() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    panel.loop_changed("door", A, 10.0)
    out = panel.loop_changed("hall", A, 12.0)
    assert kinds(out) == [Kind.BURGLARY]
    out = panel.tick(40.0, MONDAY)
    assert kinds(out) == [Kind.BURGLARY_CONFIRMED]
    ev = out.events[0]
    assert ev.confirmed and ev.zone_id == "door" and ev.details["first_zone"] == "hall"
    assert ev.sia == "BV" and ev.cid == 139


# -- confirmation ----------------------------------------------------------------------------
def test_second_zone_within_window_is_confirmed_first_stays_ba() -> None:
    panel = AlarmPanel(site(confirmation_window_min=30))
    panel.arm("main", "full", 0.0)
    first = panel.loop_changed("hall", A, 10.0).events[0]
    assert (first.kind, first.sia, first.cid, first.confirmed) == (Kind.BURGLARY, "BA", 130, False)
    panel.tick(10.0 + 28 * 60, MONDAY)  # the bell cut-off, out of the way
    second = panel.loop_changed("office", A, 10.0 + 29 * 60).events[0]
    assert second.kind is Kind.BURGLARY_CONFIRMED
    assert second.confirmed and second.details["first_zone"] == "hall"


def test_same_zone_twice_is_not_a_confirmation() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    panel.loop_changed("hall", A, 10.0)
    panel.loop_changed("hall", N, 11.0)
    assert kinds(panel.loop_changed("hall", A, 12.0)) == [Kind.BURGLARY]


def test_alarm_after_the_window_starts_a_new_window() -> None:
    panel = AlarmPanel(site(confirmation_window_min=30))
    panel.arm("main", "full", 0.0)
    panel.loop_changed("hall", A, 10.0)
    panel.tick(10.0 + 28 * 60, MONDAY)  # the bell cut-off, out of the way
    assert kinds(panel.loop_changed("office", A, 10.0 + 31 * 60)) == [Kind.BURGLARY]
    panel.loop_changed("hall", N, 2000.0)
    out = panel.loop_changed("hall", A, 2001.0)
    assert kinds(out) == [Kind.BURGLARY_CONFIRMED]
    assert out.events[0].details["first_zone"] == "office"


def test_tamper_does_not_confirm() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    panel.loop_changed("office", CUT, 5.0)
    assert kinds(panel.loop_changed("hall", A, 10.0)) == [Kind.BURGLARY]


def test_confirmation_window_does_not_span_arming_periods() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    panel.loop_changed("hall", A, 10.0)
    panel.disarm("main", 20.0)
    panel.loop_changed("hall", N, 21.0)
    panel.arm("main", "full", 30.0)
    assert kinds(panel.loop_changed("office", A, 40.0)) == [Kind.BURGLARY]


# -- siren, disarm, cancel -------------------------------------------------------------------
def test_bell_cutoff_and_end_of_alarm_state() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    panel.loop_changed("hall", A, 10.0)
    assert panel.next_deadline() == 130.0
    out = panel.tick(131.0, MONDAY)
    assert kinds(out) == [Kind.SIREN_CUTOFF]
    assert out.actions == [OutputAction("siren", "off", "bell cut-off")]
    assert state(panel) == "armed_full"  # stays set after the bell period
    out = panel.disarm("main", 140.0)
    assert kinds(out) == [Kind.DISARMED]  # no cancel after the bell period
    assert out.actions == []


def test_disarm_during_the_bell_period_cancels() -> None:
    panel = AlarmPanel(site())
    panel.arm("main", "full", 0.0)
    panel.loop_changed("hall", A, 10.0)
    out = panel.disarm("main", 20.0, user="bob")
    assert kinds(out) == [Kind.DISARMED, Kind.BURGLARY_CANCEL]
    assert out.events[0].details == {"from": "alarm", "source": "command", "user": "bob"}
    assert out.actions == [OutputAction("siren", "off", "disarm of main")]
    assert panel.next_deadline() is None
    assert state(panel) == "disarmed"


def test_fire_sounds_the_siren_while_disarmed_and_disarm_silences_it() -> None:
    panel = AlarmPanel(site())
    out = panel.loop_changed("smoke", A, 1.0)
    assert kinds(out) == [Kind.FIRE]
    assert out.actions == [OutputAction("siren", "on", "fire zone smoke")]
    out = panel.disarm("main", 2.0)
    assert out.events == []
    assert out.actions == [OutputAction("siren", "off", "disarm of main")]


def test_fire_without_on_fire_is_silent() -> None:
    panel = AlarmPanel(site(siren={"output": "siren", "cutoff_min": 2, "on_fire": False}))
    out = panel.loop_changed("smoke", A, 1.0)
    assert kinds(out) == [Kind.FIRE]
    assert out.actions == []


def test_no_siren_rule_no_actions_but_alarm_state_still_ends() -> None:
    cfg = site().model_copy(update={"siren": None})
    panel = AlarmPanel(cfg)
    panel.arm("main", "full", 0.0)
    out = panel.loop_changed("hall", A, 1.0)
    assert kinds(out) == [Kind.BURGLARY] and out.actions == []
    assert state(panel) == "alarm"
    assert panel.tick(1000.0, MONDAY).events == []
    assert state(panel) == "armed_full"


# -- schedules -------------------------------------------------------------------------------
SCHED = [{"days": ["mon", "tue"], "arm": "20:00", "disarm": "07:30", "mode": "full"}]


def at(day: dt.datetime, hhmm: str, sec: int = 0) -> dt.datetime:
    h, m = map(int, hhmm.split(":"))
    return day.replace(hour=h, minute=m, second=sec)


def test_schedule_arms_once_at_its_time() -> None:
    panel = AlarmPanel(site(schedules=SCHED))
    assert panel.tick(1.0, at(MONDAY, "19:59", 59)).events == []
    out = panel.tick(2.0, at(MONDAY, "20:00", 0))
    assert kinds(out) == [Kind.ARMED]
    assert out.events[0].details == {"mode": "full", "source": "schedule", "schedule": 0}
    panel.disarm("main", 3.0)
    assert panel.tick(4.0, at(MONDAY, "20:00", 30)).events == []  # once per day


def test_schedule_fires_after_a_short_jump_but_not_hours_later() -> None:
    panel = AlarmPanel(site(schedules=SCHED))
    panel.tick(1.0, at(MONDAY, "19:59", 30))
    assert kinds(panel.tick(2.0, at(MONDAY, "20:00", 50))) == [Kind.ARMED]
    booted_late = AlarmPanel(site(schedules=SCHED))
    assert booted_late.tick(1.0, at(MONDAY, "23:00")).events == []
    assert booted_late.tick(2.0, at(MONDAY, "20:03")).events == []  # beyond the grace


def test_schedule_disarms_and_skips_unlisted_days() -> None:
    panel = AlarmPanel(site(schedules=SCHED))
    panel.arm("main", "full", 0.0)
    tuesday = MONDAY + dt.timedelta(days=1)
    out = panel.tick(1.0, at(tuesday, "07:30"))
    assert kinds(out) == [Kind.DISARMED]
    assert out.events[0].details["source"] == "schedule"
    wednesday = MONDAY + dt.timedelta(days=2)
    assert panel.tick(2.0, at(wednesday, "20:00")).events == []


def test_refused_scheduled_arming_is_arm_failed() -> None:
    panel = AlarmPanel(site(schedules=SCHED))
    panel.loop_changed("hall", A, 0.0)
    out = panel.tick(1.0, at(MONDAY, "20:00"))
    assert kinds(out) == [Kind.ARM_FAILED]
    ev = out.events[0]
    assert (ev.sia, ev.cid) == ("CI", 454)
    assert not out.ok and "zone hall (Hall) is open" in out.reason


# -- status and restart ----------------------------------------------------------------------
def test_partition_status_names_open_and_bypassed_zones() -> None:
    import json

    panel = AlarmPanel(site())
    panel.loop_changed("hall", A, 0.0)
    panel.bypass("office", 0.0)
    status = panel.partition_status("main")
    assert json.loads(json.dumps(status)) == status
    assert status["open_zones"] == ["hall"]
    assert status["bypassed_zones"] == ["office"]
    whole = panel.status()
    assert set(whole) == {"partitions", "zones", "siren"}
    assert json.loads(json.dumps(whole)) == whole


def test_arming_state_survives_a_restart() -> None:
    panel = AlarmPanel(site(exit_delay_s=30))
    panel.bypass("hall", 0.0)
    panel.arm("main", "part", 0.0)
    saved = panel.arming_state()
    assert saved["partitions"] == {"main": "part"}
    assert saved["bypassed"] == {"hall": "manual"}
    fresh = AlarmPanel(site(exit_delay_s=30))
    out = fresh.restore_arming(saved, 500.0)
    assert kinds(out) == [Kind.PART_SET]
    assert out.events[0].details["source"] == "restart"
    assert fresh.partition_status("main")["state"] == "armed_part"  # no exit delay
    assert fresh.zone_status("hall")["bypassed"] is True


@pytest.mark.parametrize("saved", [{}, {"partitions": {"nope": "full", "main": "weird"}}])
def test_restore_arming_ignores_what_it_cannot_use(saved: dict[str, Any]) -> None:
    panel = AlarmPanel(site())
    assert panel.restore_arming(saved, 0.0).events == []
    assert state(panel) == "disarmed"
