"""The alarm panel: zone logic as a pure state machine (EN 50131 flavoured).

Inputs are debounced loop states per zone, commands (arm, disarm, bypass) and the passing of
time; outputs are journal events and output actions, returned in an :class:`Outcome`. No I/O,
no asyncio, no clock reads: the service passes monotonic ``now`` in and wires the outcome to
the journal and the relays, so every rule here is testable exactly.

Rules a professional panel follows and this one documents where the brief was silent:

* Every public call first runs the timers that fell due (exit / entry delay ends, bell period,
  siren cut-off, swinger windows), each at its own deadline rather than at ``now``. A late
  tick therefore changes nothing: an entry delay never lasts longer than configured, and the
  order of events is the order in which they were due.
* 24 h zones (tamper, box_tamper, panic, holdup, fire, technical) and loop supervision (tamper
  short / cut, fault) report whatever the arming state. Burglary zones (instant, delayed)
  report only while their partition is set and their zone is in the set mode.
* An alarm that is still active (sent, not yet restored) is not sent again; its restore is
  sent once, when the loop is back to NORMAL, whatever the arming state, so the receiver
  never shows a zone in alarm forever. An alarm raised when the loop is already NORMAL again
  (a door opened and closed during the entry delay) is followed at once by its restore.
* Disarm while the partition is in its bell period after a burglary alarm sends
  BURGLARY_CANCEL (BC/406) after DISARMED: the user cancels a live alarm. Disarm during an
  entry delay sends only DISARMED (nothing was alarmed). Disarm of a disarmed partition sends
  nothing but silences a siren sounding for it (a fire siren while disarmed).
* Disarm lifts every bypass of the partition's zones (manual, force-arm and swinger) with an
  UNBYPASS event each, resets their swinger counters, and re-evaluates their loops. A bypass
  made while disarmed therefore lasts for the next arming period, until the next disarm.
* The swinger counter of a zone counts its alarms and tampers since the last disarm of its
  partition; for 24 h zones, and for any zone while its partition is disarmed, it also rolls
  over 24 h after its first alarm (a shutdown is then lifted). A manual unbypass of a zone
  shut down by the swinger rule resets its counter: the user has taken responsibility.
* A keyswitch acts only on direct NORMAL <-> ALARM transitions of its loop (maintained: ALARM
  arms full, NORMAL disarms; momentary: each NORMAL -> ALARM toggles). A cut or shorted
  keyswitch loop is a tamper, never an arming command.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from edge.alarm.partitions import (
    MODES,
    ArmingRules,
    Outcome,
    PartitionRuntime,
    requested_by,
)
from edge.alarm.schedule import ScheduleRunner
from edge.alarm.siren import OutputAction, Siren
from edge.alarm.zones import (
    BYPASS_MANUAL,
    BYPASS_SWINGER,
    SWINGER_KINDS,
    TAMPER_WHICH,
    ZoneRuntime,
    alarm_kind,
    entry_delay_s,
    fault_kind,
    is_24h,
    is_burglary,
)
from edge.config.site import SiteConfig
from edge.errors import CommandError
from edge.events import Kind
from edge.loops import LoopState

log = logging.getLogger(__name__)

__all__ = ["AlarmPanel", "Outcome", "OutputAction"]

MAX_TIMER_STEPS = 10_000  # bound on timers run by one call (each step clears its timer)
_Timer = tuple[float, int, Callable[[float, "Outcome"], None]]


class AlarmPanel(ArmingRules):
    """Zones, partitions, siren and schedules of one site."""

    def __init__(self, cfg: SiteConfig) -> None:
        self.cfg = cfg
        self.zones = {z.id: ZoneRuntime(z) for z in cfg.zones}
        self.partitions = {p.id: PartitionRuntime(p) for p in cfg.partitions}
        self.siren = Siren(cfg.siren)
        self.schedules = ScheduleRunner(cfg.partitions)

    # -- public API -------------------------------------------------------------------------
    def loop_changed(
        self, zone_id: str, state: LoopState, now: float, reading: dict[str, Any] | None = None
    ) -> Outcome:
        """A debounced loop state from the input layer; ``reading`` goes into event details."""
        zone = self._zone(zone_id)
        try:
            state = LoopState(state)
        except ValueError as exc:
            names = ", ".join(s.value for s in LoopState)
            raise CommandError(
                f"zone {zone_id}: unknown loop state {state!r}; use {names}"
            ) from exc
        out = self._run_due(now)
        if state is zone.loop:
            return out
        zone.loop, zone.last_change = state, now
        if zone.bypass is None:
            self._evaluate(zone, now, dict(reading or {}), out)
        return out

    def arm(
        self,
        partition: str,
        mode: Literal["full", "part"],
        now: float,
        *,
        force: bool = False,
        source: str = "command",
        user: str | None = None,
    ) -> Outcome:
        """Arm, or refuse naming the zones not ready; ``force`` bypasses them for this period."""
        part = self._partition(partition)
        if mode not in MODES:
            raise CommandError(f"unknown arming mode {mode!r}: use full or part")
        out = self._run_due(now)
        out.extend(self._arm(part, mode, now, force, requested_by(source, user)))
        return out

    def disarm(
        self, partition: str, now: float, *, source: str = "command", user: str | None = None
    ) -> Outcome:
        part = self._partition(partition)
        out = self._run_due(now)
        out.extend(self._disarm(part, now, requested_by(source, user)))
        return out

    def bypass(
        self, zone_id: str, now: float, *, source: str = "command", user: str | None = None
    ) -> Outcome:
        """Silence a zone completely (24 h zones included) until unbypass or the next disarm."""
        zone = self._zone(zone_id)
        out = self._run_due(now)
        if zone.bypass is None:
            zone.bypass = BYPASS_MANUAL
            details = {"reason": BYPASS_MANUAL, **requested_by(source, user)}
            out.events.append(zone.event(Kind.BYPASS, now, details))
        return out

    def unbypass(
        self, zone_id: str, now: float, *, source: str = "command", user: str | None = None
    ) -> Outcome:
        """End a bypass; the zone's current loop is then evaluated as a fresh transition."""
        zone = self._zone(zone_id)
        out = self._run_due(now)
        if zone.bypass is not None:
            self._lift(zone, now, requested_by(source, user), out)
        return out

    def tick(self, now: float, wall: dt.datetime) -> Outcome:
        """Run due timers, then due schedules (``wall``: aware datetime in the site zone).

        A refused scheduled arming is journaled as ARM_FAILED and makes ``ok`` False.
        """
        out = self._run_due(now)
        for due in self.schedules.due(wall):
            part = self.partitions[due.partition]
            who = requested_by("schedule", None, schedule=due.schedule)
            log.info("schedule %d of %s: %s", due.schedule, part.id, due.action)
            if due.action == "arm":
                out.extend(self._arm(part, due.mode, now, False, who))
            else:
                out.extend(self._disarm(part, now, who))
        return out

    def next_deadline(self) -> float | None:
        timers = self._timers()
        return min(t[0] for t in timers) if timers else None

    def zone_status(self, zone_id: str) -> dict[str, Any]:
        zone = self._zone(zone_id)
        return zone.status(active=self._active(zone))

    def partition_status(self, partition: str) -> dict[str, Any]:
        part = self._partition(partition)
        mine = self._members(part)
        open_ = [z.id for z in mine if self._not_ready(z)]
        status = part.status(open_, [z.id for z in mine if z.bypass is not None])
        if faults := self.blocking(part.id):  # what refuses arming besides open zones
            status["faults"] = [b.to_dict() for b in faults]
        return status

    def status(self) -> dict[str, Any]:
        return {
            "partitions": {pid: self.partition_status(pid) for pid in self.partitions},
            "zones": {zid: self.zone_status(zid) for zid in self.zones},
            "siren": self.siren.status(),
        }

    # -- lookups ----------------------------------------------------------------------------
    def _zone(self, zone_id: str) -> ZoneRuntime:
        zone = self.zones.get(zone_id)
        if zone is None:
            known = ", ".join(self.zones) or "none configured"
            raise CommandError(f"unknown zone {zone_id!r}: zones are {known}")
        return zone

    def _partition(self, partition: str) -> PartitionRuntime:
        part = self.partitions.get(partition)
        if part is None:
            known = ", ".join(self.partitions)
            raise CommandError(f"unknown partition {partition!r}: partitions are {known}")
        return part

    def _active(self, zone: ZoneRuntime) -> bool:
        if zone.bypass is not None:
            return False
        if not is_burglary(zone.cfg):
            return True
        part = self.partitions[zone.cfg.partition]
        return part.is_set and part.covers(zone.cfg)

    # -- zone evaluation --------------------------------------------------------------------
    def _evaluate(
        self,
        zone: ZoneRuntime,
        at: float,
        details: dict[str, Any],
        out: Outcome,
        keyswitch: bool = True,
    ) -> None:
        """Act on the difference between the reported and the current loop state.

        ``keyswitch`` False (re-evaluation at unbypass): a keyswitch moved while bypassed is
        not an arming command; it acts again on its next move.
        """
        prev, new = zone.reported, zone.loop
        zone.reported = new
        if new is LoopState.NORMAL:
            out.events.extend(zone.restores(at, details))
        elif new.is_tamper:
            self._raise(zone, Kind.TAMPER, at, {**details, "which": TAMPER_WHICH[new]}, out)
        elif new is LoopState.FAULT:
            self._raise(zone, fault_kind(zone.cfg), at, details, out)
        else:
            kind = alarm_kind(zone.cfg)
            if kind is Kind.TAMPER:
                details = {**details, "which": "contact"}
            if kind is not None:
                self._raise(zone, kind, at, details, out)
            elif is_burglary(zone.cfg):
                self._burglary_trip(zone, at, details, out)
        if keyswitch and zone.cfg.type == "keyswitch":
            self._keyswitch(zone, prev, new, at, out)

    def _raise(
        self,
        zone: ZoneRuntime,
        kind: Kind,
        at: float,
        details: dict[str, Any],
        out: Outcome,
        confirmed: bool = False,
    ) -> bool:
        """Send an alarm / tamper / fault unless still active; siren and swinger rules."""
        event = zone.raise_(kind, at, details, confirmed)
        if event is None:
            return False
        out.events.append(event)
        if kind is Kind.FIRE:
            reason = f"fire zone {zone.id}"
            out.actions.extend(self.siren.sound(zone.cfg.partition, at, reason, fire=True))
        if kind in SWINGER_KINDS:
            self._count_swinger(zone, at, out)
        return True

    def _count_swinger(self, zone: ZoneRuntime, at: float, out: Outcome) -> None:
        part = self.partitions[zone.cfg.partition]
        limit = part.cfg.swinger_limit
        count = zone.count_alarm(at, may_expire=is_24h(zone.cfg) or not part.armed)
        if count >= limit and zone.bypass is None:
            zone.bypass = BYPASS_SWINGER
            log.warning("zone %s shut down after %d alarms", zone.id, count)
            details = {"limit": limit, "count": count}
            out.events.append(zone.event(Kind.SWINGER_SHUTDOWN, at, details))

    def _burglary_trip(
        self, zone: ZoneRuntime, at: float, details: dict[str, Any], out: Outcome
    ) -> None:
        """A burglary zone's loop went to ALARM (or was open when the set completed)."""
        part = self.partitions[zone.cfg.partition]
        if not part.is_set or not part.covers(zone.cfg) or zone.is_pending(Kind.BURGLARY):
            return
        if zone.cfg.type == "delayed" and part.alarm_until is None:
            if part.entry_until is not None:
                if zone.id not in part.entry_zones:
                    part.entry_zones.append(zone.id)
                return
            delay = entry_delay_s(zone.cfg, part.cfg)
            if delay > 0:
                part.start_entry(zone.id, at, delay)
                event = zone.event(Kind.ENTRY_DELAY, at, {**details, "delay_s": delay})
                out.events.append(event)
                return
        self._burglary(zone, part, at, details, out)

    def _burglary(
        self,
        zone: ZoneRuntime,
        part: PartitionRuntime,
        at: float,
        details: dict[str, Any],
        out: Outcome,
    ) -> None:
        """A burglary alarm: confirmation, bell period, siren."""
        if zone.is_pending(Kind.BURGLARY):
            return
        first = part.confirm(zone.id, at)
        kind = Kind.BURGLARY if first is None else Kind.BURGLARY_CONFIRMED
        if first is not None:
            details = {**details, "first_zone": first}
        self._raise(zone, kind, at, details, out, confirmed=first is not None)
        if part.alarm_until is None:
            part.alarm_until = at + self.siren.bell_s
            part.since = at
        out.actions.extend(self.siren.sound(part.id, at, f"burglary zone {zone.id}"))

    def _keyswitch(
        self, zone: ZoneRuntime, prev: LoopState, new: LoopState, at: float, out: Outcome
    ) -> None:
        turned_on = prev is LoopState.NORMAL and new is LoopState.ALARM
        turned_off = prev is LoopState.ALARM and new is LoopState.NORMAL
        part = self.partitions[zone.cfg.partition]
        who = requested_by("keyswitch", None, keyswitch=zone.id)
        if zone.cfg.keyswitch_mode == "momentary":
            turned_off, turned_on = turned_on and part.armed, turned_on and not part.armed
        if turned_on:
            out.extend(self._arm(part, "full", at, False, who))
        elif turned_off:
            out.extend(self._disarm(part, at, who))

    def _lift(self, zone: ZoneRuntime, at: float, details: dict[str, Any], out: Outcome) -> None:
        """End a bypass with UNBYPASS, then evaluate the loop as it is now."""
        was, zone.bypass = zone.bypass, None
        if was == BYPASS_SWINGER:
            zone.reset_swinger()
        out.events.append(zone.event(Kind.UNBYPASS, at, {**details, "was": was}))
        self._evaluate(zone, at, {}, out, keyswitch=False)

    # -- timers -----------------------------------------------------------------------------
    def _timers(self) -> list[_Timer]:
        timers: list[_Timer] = []
        handlers = {"exit": self._exit_end, "alarm": self._alarm_end, "entry": self._entry_end}
        ranks = {"exit": 0, "alarm": 1, "entry": 2}
        for part in self.partitions.values():
            for at, what in part.deadlines():
                timers.append((at, ranks[what], partial(handlers[what], part)))
        if self.siren.until is not None:
            timers.append((self.siren.until, 3, self._siren_cutoff))
        for zone in self.zones.values():
            expiry = zone.swinger_expiry()
            if expiry is not None and (is_24h(zone.cfg) or not self._armed_of(zone)):
                timers.append((expiry, 4, partial(self._swinger_expired, zone)))
        return timers

    def _armed_of(self, zone: ZoneRuntime) -> bool:
        return self.partitions[zone.cfg.partition].armed

    def _run_due(self, now: float) -> Outcome:
        """Run every timer due by ``now``, earliest first, each at its own deadline."""
        out = Outcome()
        for _ in range(MAX_TIMER_STEPS):
            timers = self._timers()
            if not timers:
                break
            at, _rank, handler = min(timers, key=lambda t: (t[0], t[1]))
            if at > now:
                break
            handler(at, out)
        else:
            log.error(
                "more than %d timers due at once; the rest run on the next call", MAX_TIMER_STEPS
            )
        return out

    def _siren_cutoff(self, at: float, out: Outcome) -> None:
        actions, events = self.siren.cutoff(at)
        out.actions.extend(actions)
        out.events.extend(events)

    def _swinger_expired(self, zone: ZoneRuntime, at: float, out: Outcome) -> None:
        self._lift(zone, at, {"reason": "swinger window expired"}, out)
