"""Property-based test of the alarm panel: random loop changes, arming, bypasses and time.

The machine reads only what the panel emits (the event stream, in order) plus its public
status, and checks the promises a central station relies on whatever happens:

* tamper is always reported: a non-bypassed zone whose loop goes to TAMPER_* produces a
  TAMPER event, unless its tamper is still active (reported, not restored);
* nothing at all comes from a bypassed zone (bypass state followed through the stream);
* a restore only follows its own alarm, never twice; an active alarm is never re-sent;
* the swinger limit holds per zone per arming period;
* burglary only from a set partition, and from part-set zones when part-set;
* an entry delay never lasts more than 45 s; no timer is left in the past.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edge.alarm.panel import AlarmPanel, Outcome
from edge.alarm.zones import SWINGER_KINDS
from edge.config.site import SiteConfig
from edge.events import RESTORE_OF, Event, Kind
from edge.loops import LoopState

ZONES: list[dict[str, Any]] = [
    {"id": "door", "type": "delayed", "partition": "a", "part_set": True},
    {"id": "garage", "type": "delayed", "partition": "a", "entry_delay_s": 45},
    {"id": "hall", "type": "instant", "partition": "a"},
    {"id": "pir", "type": "instant", "partition": "a", "part_set": True},
    {"id": "lid", "type": "box_tamper", "partition": "a"},
    {"id": "smoke", "type": "fire", "partition": "b"},
    {"id": "flood", "type": "technical", "technical": "flood", "partition": "b"},
    {"id": "panic", "type": "panic", "partition": "b"},
    {"id": "back", "type": "instant", "partition": "b"},
    {"id": "key", "type": "keyswitch", "partition": "b"},
]
CFG = SiteConfig.model_validate(
    {
        "site": {"id": "machine"},
        "partitions": [
            {"id": "a", "exit_delay_s": 4, "entry_delay_s": 20, "swinger_limit": 3},
            {"id": "b", "exit_delay_s": 0, "entry_delay_s": 0, "swinger_limit": 2},
        ],
        "zones": [{"input": {"kind": "gpio", "pin": 2 + i}, **z} for i, z in enumerate(ZONES)],
        "outputs": [{"id": "siren", "pin": 27}],
        "siren": {"output": "siren", "cutoff_min": 2},
    }
)
ZONE_IDS = [z["id"] for z in ZONES]
PART_OF = {z["id"]: z["partition"] for z in ZONES}
PART_SET = {z["id"] for z in ZONES if z.get("part_set")}
BURGLARY_ZONES = [z["id"] for z in ZONES if z["type"] in ("instant", "delayed")]
LIMIT = {p.id: p.swinger_limit for p in CFG.partitions}
BURGLARY_KINDS = {Kind.BURGLARY, Kind.BURGLARY_CONFIRMED}
ALARM_KINDS = set(RESTORE_OF)
RESTORE_KINDS = set(RESTORE_OF.values())
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)

zones = st.sampled_from(ZONE_IDS)
# Mostly doors and detectors opening and closing, sometimes tamper and faults.
N, A = LoopState.NORMAL, LoopState.ALARM
loop_states = st.sampled_from([N, N, N, A, A, A, *(s for s in LoopState if s not in (N, A))])
partitions = st.sampled_from(["a", "b"])
small_steps = st.floats(min_value=0.0, max_value=5.0)


class PanelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.panel = AlarmPanel(CFG)
        self.now = 0.0
        self.loops = {z: LoopState.NORMAL for z in ZONE_IDS}
        self.bypassed: set[str] = set()
        self.active: dict[str, set[Kind]] = defaultdict(set)  # restore kinds awaited
        self.swings: dict[str, int] = defaultdict(int)
        self.armed: dict[str, str | None] = {"a": None, "b": None}
        self.entry_start: dict[str, float] = {}

    # -- feeding the panel -------------------------------------------------------------------
    def _advance(self, step: float) -> None:
        self.now += step
        self._check(self.panel.tick(self.now, EPOCH + dt.timedelta(seconds=self.now)))

    @rule(zone=zones, state=loop_states, step=small_steps)
    def loop(self, zone: str, state: LoopState, step: float) -> None:
        self._advance(step)  # flush due timers so the bypass state below is current
        was_bypassed = zone in self.bypassed
        changed = state is not self.loops[zone]
        tamper_active = Kind.TAMPER_RESTORE in self.active[zone]
        self.loops[zone] = state
        out = self.panel.loop_changed(zone, state, self.now, {"volts": 1.0})
        self._check(out)
        if state.is_tamper and changed and not was_bypassed and not tamper_active:
            assert any(e.kind is Kind.TAMPER and e.zone_id == zone for e in out.events), out

    @rule(part=partitions, mode=st.sampled_from(["full", "part"]), force=st.booleans())
    def arm(self, part: str, mode: str, force: bool) -> None:
        out = self.panel.arm(part, mode, self.now, force=force, user="u")  # type: ignore[arg-type]
        self._check(out)
        if force:
            assert out.ok or "disarm it first" in out.reason

    @rule(zone=st.sampled_from(BURGLARY_ZONES), step=small_steps)
    def walk_through(self, zone: str, step: float) -> None:
        """Someone opens a door or crosses a detector: the loop opens, then closes."""
        self.loop(zone, LoopState.ALARM, step)
        self.loop(zone, LoopState.NORMAL, step)

    @rule(part=partitions, mode=st.sampled_from(["full", "part"]))
    def arm_and_leave(self, part: str, mode: str) -> None:
        """The usual evening: force-arm and let the exit delay run out."""
        self._check(self.panel.arm(part, mode, self.now, force=True))  # type: ignore[arg-type]
        self._advance(5.0)

    @rule(part=partitions)
    def disarm(self, part: str) -> None:
        out = self.panel.disarm(part, self.now)
        self._check(out)
        assert out.ok
        assert self.panel.partition_status(part)["state"] == "disarmed"

    @rule(zone=zones)
    def bypass(self, zone: str) -> None:
        self._check(self.panel.bypass(zone, self.now))
        assert zone in self.bypassed

    @rule(zone=zones)
    def unbypass(self, zone: str) -> None:
        self._check(self.panel.unbypass(zone, self.now))
        assert zone not in self.bypassed

    @rule(step=st.floats(min_value=0.0, max_value=600.0))
    def advance(self, step: float) -> None:
        self._advance(step)

    # -- following the stream ----------------------------------------------------------------
    def _check(self, out: Outcome) -> None:
        for event in out.events:
            self._follow(event)

    def _follow(self, ev: Event) -> None:
        zone, at = ev.zone_id, ev.mono_ns / 1e9
        if ev.kind in (Kind.ARMED, Kind.PART_SET):
            assert ev.partition is not None
            self.armed[ev.partition] = ev.details["mode"]
        elif ev.kind is Kind.DISARMED:
            assert ev.partition is not None
            self.armed[ev.partition] = None
            for z in ZONE_IDS:
                if PART_OF[z] == ev.partition:
                    self.swings[z] = 0
        if zone is None:
            return
        assert ev.zone_name == zone and ev.partition == PART_OF[zone]
        if ev.kind is Kind.UNBYPASS:
            assert zone in self.bypassed, f"UNBYPASS of {zone}, which was not bypassed"
            self.bypassed.discard(zone)
            if ev.details.get("was") == "swinger":
                self.swings[zone] = 0
            return
        assert zone not in self.bypassed, f"{ev.kind.value} from bypassed zone {zone}"
        if ev.kind in (Kind.BYPASS, Kind.SWINGER_SHUTDOWN):
            self.bypassed.add(zone)
        elif ev.kind is Kind.ENTRY_DELAY:
            assert ev.details["delay_s"] <= 45
            self.entry_start[PART_OF[zone]] = at
        self._follow_alarms(ev, zone, at)

    def _follow_alarms(self, ev: Event, zone: str, at: float) -> None:
        if ev.kind in ALARM_KINDS:
            restore = RESTORE_OF[ev.kind]
            assert restore not in self.active[zone], f"{ev.kind.value} of {zone} re-sent"
            self.active[zone].add(restore)
        elif ev.kind in RESTORE_KINDS:
            assert ev.kind in self.active[zone], f"{ev.kind.value} of {zone} without its alarm"
            self.active[zone].discard(ev.kind)
        if ev.kind in SWINGER_KINDS:
            self.swings[zone] += 1
            assert self.swings[zone] <= LIMIT[PART_OF[zone]], f"swinger limit of {zone}"
        if ev.kind in BURGLARY_KINDS:
            mode = self.armed[PART_OF[zone]]
            assert mode == "full" or (mode == "part" and zone in PART_SET), (zone, mode)
            if ev.details.get("cause") == "entry delay expired":
                assert at - self.entry_start[PART_OF[zone]] <= 45 + 1e-6

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def stream_agrees_with_status(self) -> None:
        status = self.panel.status()
        bypassed = {z for z, s in status["zones"].items() if s["bypassed"]}
        assert bypassed == self.bypassed
        for z, s in status["zones"].items():
            assert s["swinger_count"] <= LIMIT[PART_OF[z]]
            assert s["loop"] == self.loops[z].value
        for p, s in status["partitions"].items():
            assert (s["mode"] is None) == (self.armed[p] is None) or s["state"] == "exit_delay"
            if s["state"] == "entry_delay":
                assert s["deadline"] - self.entry_start[p] <= 45 + 1e-6

    @invariant()
    def no_timer_in_the_past(self) -> None:
        deadline = self.panel.next_deadline()
        assert deadline is None or deadline > self.now


PanelMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPanelMachine = PanelMachine.TestCase
