"""Per-partition arming state: mode, exit / entry delays, alarm (bell) period, confirmation.

The state an operator reads is derived from a few timers rather than stored, so no timer can
disagree with it: ``exit_delay`` while the exit timer runs, ``alarm`` during the bell period
after a burglary alarm, ``entry_delay`` while an entry timer runs, else ``armed_full`` /
``armed_part``, or ``disarmed``. An entry timer keeps running when an instant zone alarms
during it: the delayed zones that started it still alarm at its end if nobody disarms, which
is what lets a door followed by a detector confirm the alarm (two different zones).

Sequential confirmation (EN 50131-9 / PD 6662 flavour): within one arming period, the first
burglary alarm opens a window of ``confirmation_window_min``; an alarm from a *different*
zone inside it is confirmed (BV/139). An alarm after the window closed opens a new window.

Arming (:class:`ArmingRules`, the arming half of the panel): a partition arms only when
every burglary zone active in the requested mode is NORMAL or bypassed; otherwise the request
is refused with a sentence naming the zones (ARM_REFUSED, local; ARM_FAILED CI/454, sent to
the central station, when a schedule was refused), or, when forced, those zones are bypassed
for the arming period. ARMED / PART_SET is sent when the set completes, after the exit delay;
zones still open at that moment are processed as if they had just tripped. Arming an armed
partition in the same mode is a success without an event; in the other mode it is refused
(disarm first), except for a schedule, which never fights a mode a user chose.

Pure state, no I/O: time is always passed in (monotonic seconds).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

from edge.alarm.siren import OutputAction, Siren
from edge.alarm.zones import (
    BYPASS_FORCE,
    BYPASS_MANUAL,
    TAMPER_WHICH,
    ZoneRuntime,
    describe,
    is_burglary,
)
from edge.config.models import Partition, Zone
from edge.events import Event, Kind
from edge.loops import LoopState

log = logging.getLogger(__name__)

Mode = Literal["full", "part"]
MODES: tuple[Mode, ...] = ("full", "part")


@dataclasses.dataclass
class PartitionRuntime:
    """Arming state of one partition between two calls."""

    cfg: Partition
    mode: Mode | None = None
    since: float = 0.0
    exit_until: float | None = None
    entry_started: float | None = None
    entry_until: float | None = None
    entry_zones: list[str] = dataclasses.field(default_factory=list)
    alarm_until: float | None = None
    confirm_zone: str | None = None
    confirm_at: float | None = None
    arm_details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.cfg.id

    @property
    def armed(self) -> bool:
        """Armed in any way, exit delay included (a disarm has something to undo)."""
        return self.mode is not None

    @property
    def is_set(self) -> bool:
        """Burglary zones are live: armed and the exit delay is over."""
        return self.mode is not None and self.exit_until is None

    @property
    def state(self) -> str:
        if self.mode is None:
            return "disarmed"
        if self.exit_until is not None:
            return "exit_delay"
        if self.alarm_until is not None:
            return "alarm"
        if self.entry_until is not None:
            return "entry_delay"
        return f"armed_{self.mode}"

    def covers(self, zone: Zone) -> bool:
        return self.mode is not None and in_mode(zone, self.mode)

    def event(self, kind: Kind, at: float, details: dict[str, Any] | None = None) -> Event:
        return Event(
            kind, partition=self.cfg.id, details=dict(details or {}), mono_ns=int(at * 1e9)
        )

    def start_arming(self, mode: Mode, at: float, details: dict[str, Any]) -> None:
        self.mode = mode
        self.since = at
        self.arm_details = dict(details)
        self.exit_until = at + self.cfg.exit_delay_s if self.cfg.exit_delay_s > 0 else None
        self.confirm_zone = None
        self.confirm_at = None

    def set_event(self, at: float) -> Event:
        """ARMED (CL) or PART_SET (NL): sent when the set completes, after the exit delay."""
        kind = Kind.PART_SET if self.mode == "part" else Kind.ARMED
        return self.event(kind, at, {"mode": self.mode, **self.arm_details})

    def start_entry(self, zone_id: str, at: float, delay_s: int) -> None:
        self.entry_started = at
        self.entry_until = at + delay_s
        self.entry_zones = [zone_id]
        self.since = at

    def clear_entry(self) -> list[str]:
        zones = self.entry_zones
        self.entry_started = self.entry_until = None
        self.entry_zones = []
        return zones

    def confirm(self, zone_id: str, at: float) -> str | None:
        """The first zone when this alarm confirms an earlier one, else None (and it opens a
        new window when none is open)."""
        window = self.cfg.confirmation_window_min * 60.0
        open_ = self.confirm_at is not None and at - self.confirm_at <= window
        if open_ and self.confirm_zone != zone_id:
            return self.confirm_zone
        if not open_:
            self.confirm_zone, self.confirm_at = zone_id, at
        return None

    def disarm(self, at: float) -> str:
        """Back to disarmed; returns the state it left."""
        left = self.state
        self.mode = None
        self.since = at
        self.exit_until = self.alarm_until = None
        self.clear_entry()
        self.confirm_zone = self.confirm_at = None
        self.arm_details = {}
        return left

    def deadlines(self) -> list[tuple[float, str]]:
        """(time, what) of every running timer of this partition."""
        timers = (("exit", self.exit_until), ("alarm", self.alarm_until))
        out = [(t, what) for what, t in timers if t is not None]
        if self.entry_until is not None:
            out.append((self.entry_until, "entry"))
        return out

    def status(self, open_zones: list[str], bypassed: list[str]) -> dict[str, Any]:
        deadline = self.exit_until if self.exit_until is not None else self.entry_until
        return {
            "id": self.cfg.id,
            "name": self.cfg.name or self.cfg.id,
            "state": self.state,
            "mode": self.mode,
            "since": self.since,
            "deadline": deadline,
            "entry_zones": list(self.entry_zones),
            "alarm_until": self.alarm_until,
            "open_zones": open_zones,
            "bypassed_zones": bypassed,
        }


def in_mode(zone: Zone, mode: Mode) -> bool:
    """A burglary zone is active in full set, and in part set only if ``part_set``."""
    return mode == "full" or zone.part_set


def refusal_reason(partition: str, problems: list[str]) -> str:
    """The sentence a user reads when arming is refused because of zones not ready.

    ``problems`` are phrases such as ``zone hall (Hall) is open``.
    """
    if len(problems) == 1:
        return f"cannot arm {partition}: {problems[0]}; close it or force-arm to bypass it"
    listed = ", ".join(problems[:-1]) + " and " + problems[-1]
    return f"cannot arm {partition}: {listed}; close them or force-arm to bypass them"


@dataclasses.dataclass(frozen=True)
class Blocker:
    """A diagnostics failure that refuses arming like an open zone (edge.diag: a ``fail``
    finding of an arming-relevant check, once its hold-off passed). ``zone``: the zone the
    finding is about, which then blocks only its own partition."""

    check: str
    scope: str
    summary: str
    zone: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "scope": self.scope, "summary": self.summary}


def fault_refusal(partition: str, zones: list[str], faults: list[Blocker]) -> str:
    """The sentence a user reads when failing diagnostics (and maybe zones) refuse arming."""
    listed = "; ".join([*zones, *(f"{b.summary} ({b.check})" for b in faults)])
    fix = "close the zones and fix the faults" if zones else "fix it (`edge diag`)"
    return f"cannot arm {partition}: {listed}; {fix}, or force-arm to override"


@dataclasses.dataclass
class Outcome:
    """What one call produced: events to journal, output actions, and whether it succeeded."""

    events: list[Event] = dataclasses.field(default_factory=list)
    actions: list[OutputAction] = dataclasses.field(default_factory=list)
    ok: bool = True
    reason: str = ""

    def extend(self, other: Outcome) -> None:
        self.events.extend(other.events)
        self.actions.extend(other.actions)
        if not other.ok:
            self.ok = False
            self.reason = f"{self.reason}; {other.reason}" if self.reason else other.reason


def requested_by(source: str, user: str | None, **extra: Any) -> dict[str, Any]:
    """Details naming who asked for an arming change."""
    details: dict[str, Any] = {"source": source, **extra}
    if user is not None:
        details["user"] = user
    return details


class ArmingRules:
    """The arming half of :class:`edge.alarm.panel.AlarmPanel`: arm, refuse, force, exit and
    entry delay ends, bell period, disarm, and the arming state kept across restarts.

    The zone half (what a loop transition raises) lives in the panel; the hooks below are
    the few zone rules arming needs.
    """

    zones: dict[str, ZoneRuntime]
    partitions: dict[str, PartitionRuntime]
    siren: Siren
    blockers: tuple[Blocker, ...] = ()  # set by edge-alarm's diagnostics after each run

    def _burglary_trip(
        self, zone: ZoneRuntime, at: float, details: dict[str, Any], out: Outcome
    ) -> None:
        raise NotImplementedError

    def _burglary(
        self,
        zone: ZoneRuntime,
        part: PartitionRuntime,
        at: float,
        details: dict[str, Any],
        out: Outcome,
    ) -> None:
        raise NotImplementedError

    def _lift(self, zone: ZoneRuntime, at: float, details: dict[str, Any], out: Outcome) -> None:
        raise NotImplementedError

    def _run_due(self, now: float) -> Outcome:
        raise NotImplementedError

    def arming_state(self) -> dict[str, Any]:
        """What must survive a restart: arming modes and user-made bypasses (JSON-able)."""
        return {
            "v": 1,
            "partitions": {p.id: p.mode for p in self.partitions.values()},
            "bypassed": {
                z.id: z.bypass
                for z in self.zones.values()
                if z.bypass in (BYPASS_MANUAL, BYPASS_FORCE)
            },
        }

    def restore_arming(self, saved: dict[str, Any], now: float) -> Outcome:
        """Come back armed after a restart, at once (no exit delay: nobody is leaving).

        Bypasses are re-applied silently (they were journaled before the restart); zones
        open at that moment are then processed as just tripped, as at the end of an exit
        delay, so an intruder who cut the power still meets the entry delay or an alarm.
        """
        out = self._run_due(now)
        for zid, reason in dict(saved.get("bypassed") or {}).items():
            zone = self.zones.get(zid)
            if zone is not None and zone.bypass is None and reason in (BYPASS_MANUAL, BYPASS_FORCE):
                zone.bypass = reason
        for pid, mode in dict(saved.get("partitions") or {}).items():
            part = self.partitions.get(pid)
            if part is None or mode not in MODES or part.armed:
                if mode is not None:
                    log.warning("saved arming of %r as %r ignored", pid, mode)
                continue
            part.start_arming(mode, now, {"source": "restart"})
            self._complete_set(part, now, out)
        return out

    def _members(self, part: PartitionRuntime) -> list[ZoneRuntime]:
        return [z for z in self.zones.values() if z.cfg.partition == part.id]

    def blocking(self, partition: str) -> list[Blocker]:
        """The diagnostics failures that refuse arming ``partition`` now. A finding about a
        zone counts only for the zone's own partition, and not for a burglary zone: the
        open-zone rule already covers those, live, and a force bypasses them."""
        out = []
        for b in self.blockers:
            zone = self.zones.get(b.zone) if b.zone is not None else None
            if zone is not None and (
                zone.cfg.partition != partition or is_burglary(zone.cfg) or zone.bypass
            ):
                continue
            out.append(b)
        return out

    def _not_ready(self, zone: ZoneRuntime) -> bool:
        """A burglary zone that prevents arming: loop not NORMAL and not bypassed."""
        return is_burglary(zone.cfg) and zone.bypass is None and zone.loop is not LoopState.NORMAL

    def _arm(
        self, part: PartitionRuntime, mode: Mode, at: float, force: bool, who: dict[str, Any]
    ) -> Outcome:
        out = Outcome()
        if part.armed:
            if part.mode == mode or who.get("source") == "schedule":
                return out  # already armed: a schedule does not fight a user's choice of mode
            reason = f"cannot arm {part.id} {mode}: it is armed {part.mode}; disarm it first"
            return self._refuse(part, mode, at, who, reason, [])
        not_ready = [z for z in self._members(part) if self._not_ready(z) and in_mode(z.cfg, mode)]
        faults = self.blocking(part.id)
        if faults and not force:
            reason = fault_refusal(part.id, [_why(z) for z in not_ready], faults)
            found = [b.to_dict() for b in faults]
            return self._refuse(part, mode, at, who, reason, [z.id for z in not_ready], found)
        if not_ready and not force:
            reason = refusal_reason(part.id, [_why(z) for z in not_ready])
            return self._refuse(part, mode, at, who, reason, [z.id for z in not_ready])
        if faults:  # forced over failing diagnostics: who did it, and over what
            details = {"mode": mode, "faults": [b.to_dict() for b in faults], **who}
            out.events.append(part.event(Kind.ARM_FORCED, at, details))
        for zone in not_ready:
            zone.bypass = BYPASS_FORCE
            details = {"reason": BYPASS_FORCE, "loop": zone.loop.value, **who}
            out.events.append(zone.event(Kind.BYPASS, at, details))
        for zone in self._members(part):
            zone.memory.clear()
        part.start_arming(mode, at, who)
        if part.exit_until is None:
            self._complete_set(part, at, out)
        else:
            details = {"mode": mode, "exit_delay_s": part.cfg.exit_delay_s, **who}
            out.events.append(part.event(Kind.EXIT_DELAY, at, details))
        return out

    def _refuse(
        self,
        part: PartitionRuntime,
        mode: Mode,
        at: float,
        who: dict[str, Any],
        reason: str,
        zones: list[str],
        faults: list[dict[str, str]] | None = None,
    ) -> Outcome:
        """ARM_REFUSED for a user (local), ARM_FAILED (CI/454) for a schedule (transmitted)."""
        log.info("%s", reason)
        kind = Kind.ARM_FAILED if who.get("source") == "schedule" else Kind.ARM_REFUSED
        details = {"mode": mode, "reason": reason, "zones": zones, **who}
        if faults:
            details["faults"] = faults
        return Outcome(events=[part.event(kind, at, details)], ok=False, reason=reason)

    def _complete_set(self, part: PartitionRuntime, at: float, out: Outcome) -> None:
        """End of the exit delay: ARMED / PART_SET, then open zones count as just tripped."""
        part.exit_until = None
        part.since = at
        out.events.append(part.set_event(at))
        for zone in self._members(part):
            if zone.bypass is None and zone.loop is LoopState.ALARM and is_burglary(zone.cfg):
                self._burglary_trip(zone, at, {"cause": "open at end of exit delay"}, out)

    def _disarm(self, part: PartitionRuntime, at: float, who: dict[str, Any]) -> Outcome:
        out = Outcome(actions=self.siren.silence(part.id, f"disarm of {part.id}"))
        if not part.armed:
            return out
        in_alarm = part.alarm_until is not None
        left = part.disarm(at)
        out.events.append(part.event(Kind.DISARMED, at, {"from": left, **who}))
        if in_alarm:
            out.events.append(part.event(Kind.BURGLARY_CANCEL, at, who))
        for zone in self._members(part):
            zone.reset_swinger()
            if zone.bypass is not None:
                self._lift(zone, at, {"reason": "disarm", **who}, out)
        return out

    def _exit_end(self, part: PartitionRuntime, at: float, out: Outcome) -> None:
        self._complete_set(part, at, out)

    def _alarm_end(self, part: PartitionRuntime, at: float, out: Outcome) -> None:
        """The bell period is over: the partition stays set (re-arms) and waits again."""
        part.alarm_until = None
        part.since = at

    def _entry_end(self, part: PartitionRuntime, at: float, out: Outcome) -> None:
        """Nobody disarmed: every delayed zone opened during the delay alarms now."""
        part.since = at
        for zid in part.clear_entry():
            zone = self.zones[zid]
            if zone.bypass is not None or not part.covers(zone.cfg):
                continue
            self._burglary(zone, part, at, {"cause": "entry delay expired"}, out)
            if zone.bypass is None and zone.reported is LoopState.NORMAL:
                out.events.extend(zone.restores(at, {}))


def _why(zone: ZoneRuntime) -> str:
    """Why a zone is not ready, as a user reads it."""
    state = zone.loop
    if state is LoopState.ALARM:
        what = "is open"
    elif state.is_tamper:
        what = f"is tampered ({TAMPER_WHICH[state]})"
    else:
        what = "has a loop fault"
    return f"zone {describe(zone.cfg)} {what}"
