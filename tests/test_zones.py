"""Per-zone rules of the alarm panel: 24 h kinds, loop supervision, restores, bypass, swinger
shutdown and keyswitches. Partition-level rules are in test_partitions.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from edge.alarm.panel import AlarmPanel, Outcome
from edge.alarm.zones import SWINGER_WINDOW_S
from edge.config.site import SiteConfig
from edge.errors import CommandError
from edge.events import Kind
from edge.loops import LoopState

N, A = LoopState.NORMAL, LoopState.ALARM
SHORT, CUT, FAULT = LoopState.TAMPER_SHORT, LoopState.TAMPER_CUT, LoopState.FAULT


def site(*zones: dict[str, Any], exit_delay: int = 0, swinger: int = 3) -> SiteConfig:
    """A one-partition site; zones get distinct GPIO pins, the siren is on pin 27."""
    return SiteConfig.model_validate(
        {
            "site": {"id": "test-site"},
            "partitions": [{"id": "main", "exit_delay_s": exit_delay, "swinger_limit": swinger}],
            "zones": [{"input": {"kind": "gpio", "pin": 2 + i}, **z} for i, z in enumerate(zones)],
            "outputs": [{"id": "siren", "pin": 27}],
            "siren": {"output": "siren", "cutoff_min": 2},
        }
    )


def kinds(out: Outcome) -> list[Kind]:
    return [e.kind for e in out.events]


@pytest.mark.parametrize(
    ("ztype", "technical", "alarm", "restore"),
    [
        ("tamper", "other", Kind.TAMPER, Kind.TAMPER_RESTORE),
        ("box_tamper", "other", Kind.TAMPER, Kind.TAMPER_RESTORE),
        ("panic", "other", Kind.PANIC, Kind.PANIC_RESTORE),
        ("holdup", "other", Kind.HOLDUP, Kind.HOLDUP_RESTORE),
        ("fire", "other", Kind.FIRE, Kind.FIRE_RESTORE),
        ("technical", "flood", Kind.FLOOD, Kind.FLOOD_RESTORE),
        ("technical", "freezer", Kind.FREEZER, Kind.FREEZER_RESTORE),
        ("technical", "mains", Kind.MAINS_LOSS, Kind.MAINS_RESTORE),
        ("technical", "battery", Kind.LOW_BATTERY, Kind.BATTERY_RESTORE),
        ("technical", "other", Kind.TECHNICAL, Kind.TECHNICAL_RESTORE),
    ],
)
def test_24h_zone_reports_while_disarmed_then_restores(
    ztype: str, technical: str, alarm: Kind, restore: Kind
) -> None:
    panel = AlarmPanel(site({"id": "z", "name": "Zed", "type": ztype, "technical": technical}))
    out = panel.loop_changed("z", A, 1.0)
    assert kinds(out) == [alarm]
    ev = out.events[0]
    assert (ev.zone_id, ev.zone_name, ev.partition) == ("z", "Zed", "main")
    assert kinds(panel.loop_changed("z", N, 2.0)) == [restore]


def test_24h_alarm_is_not_repeated_until_restored() -> None:
    panel = AlarmPanel(site({"id": "p", "type": "panic"}))
    assert kinds(panel.loop_changed("p", A, 1.0)) == [Kind.PANIC]
    assert kinds(panel.loop_changed("p", FAULT, 2.0)) == [Kind.LOOP_FAULT]
    assert kinds(panel.loop_changed("p", A, 3.0)) == []  # panic still active
    assert kinds(panel.loop_changed("p", N, 4.0)) == [Kind.PANIC_RESTORE, Kind.LOOP_FAULT_RESTORE]
    assert kinds(panel.loop_changed("p", A, 5.0)) == [Kind.PANIC]


@pytest.mark.parametrize(("state", "which"), [(SHORT, "short"), (CUT, "cut")])
def test_loop_tamper_on_a_burglary_zone_reported_while_disarmed(
    state: LoopState, which: str
) -> None:
    panel = AlarmPanel(site({"id": "hall", "name": "Hall", "type": "instant"}))
    out = panel.loop_changed("hall", state, 1.0, {"volts": 0.01, "ohms": 3.0})
    assert kinds(out) == [Kind.TAMPER]
    assert out.events[0].details == {"volts": 0.01, "ohms": 3.0, "which": which}
    restore = panel.loop_changed("hall", N, 2.0)
    assert kinds(restore) == [Kind.TAMPER_RESTORE]
    assert restore.events[0].details["restores"] == "tamper"


def test_tamper_zone_contact_detail() -> None:
    panel = AlarmPanel(site({"id": "lid", "type": "box_tamper"}))
    assert panel.loop_changed("lid", A, 1.0).events[0].details == {"which": "contact"}


def test_short_then_cut_is_one_tamper_and_one_restore() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}))
    assert kinds(panel.loop_changed("hall", SHORT, 1.0)) == [Kind.TAMPER]
    assert kinds(panel.loop_changed("hall", CUT, 2.0)) == []
    assert kinds(panel.loop_changed("hall", N, 3.0)) == [Kind.TAMPER_RESTORE]
    assert kinds(panel.loop_changed("hall", N, 4.0)) == []


@pytest.mark.parametrize(
    ("ztype", "fault", "restore"),
    [
        ("instant", Kind.LOOP_FAULT, Kind.LOOP_FAULT_RESTORE),
        ("panic", Kind.LOOP_FAULT, Kind.LOOP_FAULT_RESTORE),
        ("keyswitch", Kind.LOOP_FAULT, Kind.LOOP_FAULT_RESTORE),
        ("fire", Kind.FIRE_LOOP_FAULT, Kind.FIRE_LOOP_FAULT_RESTORE),
    ],
)
def test_loop_fault_and_its_restore(ztype: str, fault: Kind, restore: Kind) -> None:
    panel = AlarmPanel(site({"id": "z", "type": ztype}))
    assert kinds(panel.loop_changed("z", FAULT, 1.0)) == [fault]
    assert kinds(panel.loop_changed("z", N, 2.0)) == [restore]


def test_burglary_zone_silent_while_disarmed_and_no_restore_without_alarm() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}))
    assert kinds(panel.loop_changed("hall", A, 1.0)) == []
    assert kinds(panel.loop_changed("hall", N, 2.0)) == []


def test_burglary_restore_comes_after_disarm_when_the_loop_closes() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}))
    panel.arm("main", "full", 0.0)
    assert kinds(panel.loop_changed("hall", A, 1.0)) == [Kind.BURGLARY]
    panel.disarm("main", 2.0)
    assert kinds(panel.loop_changed("hall", N, 3.0)) == [Kind.BURGLARY_RESTORE]


def test_bypassed_zone_is_completely_silent() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}, {"id": "lid", "type": "tamper"}))
    by = panel.bypass("hall", 0.0, user="alice")
    assert kinds(by) == [Kind.BYPASS]
    assert by.events[0].details == {"reason": "manual", "source": "command", "user": "alice"}
    panel.bypass("lid", 0.0)  # 24 h zones may be bypassed too
    panel.arm("main", "full", 0.0)
    for state in (A, SHORT, CUT, FAULT, N, A):
        assert kinds(panel.loop_changed("hall", state, 1.0)) == []
        assert kinds(panel.loop_changed("lid", state, 1.0)) == []
    assert panel.zone_status("hall")["loop"] == "alarm"
    assert panel.zone_status("hall")["active"] is False


def test_unbypass_evaluates_the_loop_as_a_fresh_transition() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}, {"id": "lid", "type": "tamper"}))
    panel.arm("main", "full", 0.0)
    panel.bypass("hall", 1.0)
    panel.bypass("lid", 1.0)
    panel.loop_changed("hall", A, 2.0)
    panel.loop_changed("lid", CUT, 2.0)
    assert kinds(panel.unbypass("hall", 3.0)) == [Kind.UNBYPASS, Kind.BURGLARY]
    out = panel.unbypass("lid", 3.0)
    assert kinds(out) == [Kind.UNBYPASS, Kind.TAMPER]
    assert out.events[1].details["which"] == "cut"


def test_restore_hidden_by_bypass_is_sent_at_unbypass() -> None:
    panel = AlarmPanel(site({"id": "lid", "type": "tamper"}))
    assert kinds(panel.loop_changed("lid", A, 1.0)) == [Kind.TAMPER]
    panel.bypass("lid", 2.0)
    assert kinds(panel.loop_changed("lid", N, 3.0)) == []
    assert kinds(panel.unbypass("lid", 4.0)) == [Kind.UNBYPASS, Kind.TAMPER_RESTORE]
    assert kinds(panel.unbypass("lid", 5.0)) == []  # not bypassed: nothing to do


def test_bypass_twice_is_one_event() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}))
    assert kinds(panel.bypass("hall", 1.0)) == [Kind.BYPASS]
    assert kinds(panel.bypass("hall", 2.0)) == []


def test_disarm_lifts_manual_bypass() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}))
    panel.bypass("hall", 0.0)
    panel.arm("main", "full", 0.0)
    out = panel.disarm("main", 1.0, user="bob")
    assert kinds(out) == [Kind.DISARMED, Kind.UNBYPASS]
    assert out.events[1].details == {
        "reason": "disarm",
        "source": "command",
        "user": "bob",
        "was": "manual",
    }
    assert panel.zone_status("hall")["bypassed"] is False


def _swing(panel: AlarmPanel, zone: str, times: int, t0: float) -> list[Kind]:
    seen: list[Kind] = []
    for i in range(times):
        seen += kinds(panel.loop_changed(zone, A, t0 + 2 * i))
        seen += kinds(panel.loop_changed(zone, N, t0 + 2 * i + 1))
    return seen


def test_swinger_shutdown_after_the_limit_until_disarm() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}, swinger=3))
    panel.arm("main", "full", 0.0)
    seen = _swing(panel, "hall", 5, 10.0)
    assert seen.count(Kind.BURGLARY) == 3
    assert seen.count(Kind.SWINGER_SHUTDOWN) == 1
    # the alarm reaching the limit is sent, then the shutdown; its restore waits for unbypass
    shutdown_at = seen.index(Kind.SWINGER_SHUTDOWN)
    assert seen[shutdown_at - 1] == Kind.BURGLARY
    assert seen[shutdown_at + 1 :] == []
    status = panel.zone_status("hall")
    assert (status["bypass_reason"], status["swinger_count"]) == ("swinger", 3)
    out = panel.disarm("main", 100.0)
    assert kinds(out) == [Kind.DISARMED, Kind.BURGLARY_CANCEL, Kind.UNBYPASS, Kind.BURGLARY_RESTORE]
    assert panel.zone_status("hall")["swinger_count"] == 0
    panel.arm("main", "full", 200.0)
    assert _swing(panel, "hall", 1, 300.0) == [Kind.BURGLARY, Kind.BURGLARY_RESTORE]


def test_tamper_counts_for_the_swinger_limit_and_24h_window_rolls_over() -> None:
    panel = AlarmPanel(site({"id": "lid", "type": "box_tamper"}, swinger=2))
    seen = _swing(panel, "lid", 3, 0.0)
    assert seen == [Kind.TAMPER, Kind.TAMPER_RESTORE, Kind.TAMPER, Kind.SWINGER_SHUTDOWN]
    deadline = panel.next_deadline()
    assert deadline is not None and deadline == pytest.approx(SWINGER_WINDOW_S)
    assert panel.tick(deadline - 1, _wall()).events == []
    out = panel.tick(deadline, _wall())
    assert kinds(out) == [Kind.UNBYPASS, Kind.TAMPER_RESTORE]
    assert out.events[0].details == {"reason": "swinger window expired", "was": "swinger"}
    assert kinds(panel.loop_changed("lid", A, deadline + 1)) == [Kind.TAMPER]


def test_manual_unbypass_of_a_swinger_shutdown_resets_the_count() -> None:
    panel = AlarmPanel(site({"id": "lid", "type": "tamper"}, swinger=1))
    assert kinds(panel.loop_changed("lid", A, 1.0)) == [Kind.TAMPER, Kind.SWINGER_SHUTDOWN]
    panel.loop_changed("lid", N, 2.0)
    assert kinds(panel.unbypass("lid", 3.0)) == [Kind.UNBYPASS, Kind.TAMPER_RESTORE]
    assert panel.zone_status("lid")["swinger_count"] == 0


def test_loop_faults_do_not_count_for_the_swinger_limit() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}, swinger=1))
    for i in range(4):
        assert kinds(panel.loop_changed("hall", FAULT, 2.0 * i)) == [Kind.LOOP_FAULT]
        assert kinds(panel.loop_changed("hall", N, 2.0 * i + 1)) == [Kind.LOOP_FAULT_RESTORE]


def test_maintained_keyswitch_arms_and_disarms() -> None:
    panel = AlarmPanel(site({"id": "key", "type": "keyswitch"}))
    out = panel.loop_changed("key", A, 1.0)
    assert kinds(out) == [Kind.ARMED]
    assert out.events[0].details == {"mode": "full", "source": "keyswitch", "keyswitch": "key"}
    out = panel.loop_changed("key", N, 2.0)
    assert kinds(out) == [Kind.DISARMED]
    assert out.events[0].details["source"] == "keyswitch"


def test_keyswitch_tamper_is_never_an_arming_command() -> None:
    panel = AlarmPanel(site({"id": "key", "type": "keyswitch"}))
    assert kinds(panel.loop_changed("key", CUT, 1.0)) == [Kind.TAMPER]
    assert kinds(panel.loop_changed("key", A, 2.0)) == []
    assert panel.partition_status("main")["state"] == "disarmed"
    assert kinds(panel.loop_changed("key", N, 3.0)) == [Kind.TAMPER_RESTORE]


def test_momentary_keyswitch_toggles_on_each_press() -> None:
    panel = AlarmPanel(site({"id": "key", "type": "keyswitch", "keyswitch_mode": "momentary"}))
    assert kinds(panel.loop_changed("key", A, 1.0)) == [Kind.ARMED]
    assert kinds(panel.loop_changed("key", N, 1.5)) == []
    assert kinds(panel.loop_changed("key", A, 2.0)) == [Kind.DISARMED]
    assert kinds(panel.loop_changed("key", N, 2.5)) == []
    assert kinds(panel.loop_changed("key", A, 3.0)) == [Kind.ARMED]


def test_keyswitch_arming_refused_when_a_zone_is_open() -> None:
    panel = AlarmPanel(site({"id": "key", "type": "keyswitch"}, {"id": "hall", "type": "instant"}))
    panel.loop_changed("hall", A, 0.5)
    out = panel.loop_changed("key", A, 1.0)
    assert not out.ok
    assert kinds(out) == [Kind.ARM_REFUSED]
    assert "zone hall is open" in out.reason


def test_unknown_zone_and_loop_state_are_command_errors() -> None:
    panel = AlarmPanel(site({"id": "hall", "type": "instant"}, {"id": "door", "type": "delayed"}))
    with pytest.raises(CommandError, match="unknown zone 'nope': zones are hall, door"):
        panel.loop_changed("nope", A, 1.0)
    with pytest.raises(CommandError, match="unknown zone"):
        panel.bypass("nope", 1.0)
    with pytest.raises(CommandError, match="unknown loop state"):
        panel.loop_changed("hall", "open", 1.0)  # type: ignore[arg-type]


def test_zone_status_is_json_able_and_complete() -> None:
    import json

    panel = AlarmPanel(site({"id": "hall", "name": "Hall", "type": "instant"}))
    panel.arm("main", "full", 0.0)
    panel.loop_changed("hall", A, 5.0)
    status = panel.zone_status("hall")
    assert json.loads(json.dumps(status)) == status
    assert status["loop"] == "alarm"
    assert status["active"] is True
    assert status["alarm_memory"] == ["burglary"]
    assert status["pending_restore"] == ["burglary"]
    assert status["last_change"] == 5.0
    assert status["swinger_count"] == 1


def _wall() -> dt.datetime:
    return dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
