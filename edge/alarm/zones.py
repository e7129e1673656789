"""Per-zone runtime state: what the loop is doing, what was reported, what awaits a restore.

A zone remembers two loop states: ``loop`` (what the input layer last said) and ``reported``
(the last state the panel acted on). They differ only while the zone is bypassed: nothing at
all comes out of a bypassed zone, and at unbypass the panel re-evaluates the difference as a
fresh transition, so an alarm hidden by the bypass is never lost and never sent twice.

``pending`` holds every alarm, tamper or fault kind that was sent and not yet restored, keyed
by its restore kind. This is what makes restores honest: a restore is sent only for a pending
alarm, once, when the loop is back to NORMAL; and an alarm whose restore is still pending is
not sent again (the receiver still shows it active).

Pure state, no I/O: time is always passed in (monotonic seconds).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edge.config.models import ENTRY_DELAY_MAX_S, Partition, Zone
from edge.events import RESTORE_OF, Event, Kind
from edge.loops import LoopState

BURGLARY_TYPES = frozenset({"instant", "delayed"})
HOUR24_TYPES = frozenset({"tamper", "box_tamper", "panic", "holdup", "fire", "technical"})

# Kind raised when the loop of a 24 h zone goes to ALARM.
ALARM_KIND_24H: dict[str, Kind] = {
    "tamper": Kind.TAMPER,
    "box_tamper": Kind.TAMPER,
    "panic": Kind.PANIC,
    "holdup": Kind.HOLDUP,
    "fire": Kind.FIRE,
}
TECHNICAL_KIND: dict[str, Kind] = {
    "flood": Kind.FLOOD,
    "freezer": Kind.FREEZER,
    "mains": Kind.MAINS_LOSS,
    "battery": Kind.LOW_BATTERY,
    "other": Kind.TECHNICAL,
}

# Kinds counted against the swinger limit: every alarm and tamper, never a loop fault (a fault
# is a wiring problem, not a detection, and shutting the zone down would hide its restore).
SWINGER_KINDS = frozenset(
    {
        Kind.BURGLARY,
        Kind.BURGLARY_CONFIRMED,
        Kind.TAMPER,
        *ALARM_KIND_24H.values(),
        *TECHNICAL_KIND.values(),
    }
)
SWINGER_WINDOW_S = 24 * 3600.0

BYPASS_MANUAL = "manual"
BYPASS_FORCE = "force-arm"
BYPASS_SWINGER = "swinger"

TAMPER_WHICH = {LoopState.TAMPER_SHORT: "short", LoopState.TAMPER_CUT: "cut"}


def is_burglary(zone: Zone) -> bool:
    return zone.type in BURGLARY_TYPES


def is_24h(zone: Zone) -> bool:
    """24 h zones report whatever the arming state of their partition."""
    return zone.type in HOUR24_TYPES


def alarm_kind(zone: Zone) -> Kind | None:
    """Kind a 24 h zone raises when its loop goes to ALARM (None: not a 24 h zone)."""
    if zone.type == "technical":
        return TECHNICAL_KIND[zone.technical]
    return ALARM_KIND_24H.get(zone.type)


def fault_kind(zone: Zone) -> Kind:
    """A fire loop fault has its own code: receivers treat it as a fire-system trouble."""
    return Kind.FIRE_LOOP_FAULT if zone.type == "fire" else Kind.LOOP_FAULT


def entry_delay_s(zone: Zone, partition: Partition) -> int:
    """The zone's override, else the partition's; never above the EN 50131 ceiling of 45 s."""
    delay = zone.entry_delay_s if zone.entry_delay_s is not None else partition.entry_delay_s
    return min(delay, ENTRY_DELAY_MAX_S)


def describe(zone: Zone) -> str:
    """How a user-facing sentence names a zone: ``hall (Hall)``, or ``hall`` when unnamed."""
    return f"{zone.id} ({zone.name})" if zone.name and zone.name != zone.id else zone.id


def mono_ns(at: float) -> int:
    return int(at * 1e9)


@dataclasses.dataclass
class ZoneRuntime:
    """Everything the panel knows about one zone between two calls."""

    cfg: Zone
    loop: LoopState = LoopState.NORMAL
    reported: LoopState = LoopState.NORMAL
    last_change: float | None = None
    bypass: str | None = None
    pending: dict[Kind, Kind] = dataclasses.field(default_factory=dict)
    memory: list[str] = dataclasses.field(default_factory=list)
    swinger_count: int = 0
    swinger_since: float | None = None

    @property
    def id(self) -> str:
        return self.cfg.id

    def event(
        self, kind: Kind, at: float, details: dict[str, Any] | None = None, confirmed: bool = False
    ) -> Event:
        return Event(
            kind,
            zone_id=self.cfg.id,
            zone_name=self.cfg.label,
            partition=self.cfg.partition,
            confirmed=confirmed,
            details=dict(details or {}),
            mono_ns=mono_ns(at),
        )

    def is_pending(self, kind: Kind) -> bool:
        """True while an alarm of this kind (or one sharing its restore) awaits its restore."""
        return RESTORE_OF[kind] in self.pending

    def raise_(
        self, kind: Kind, at: float, details: dict[str, Any], confirmed: bool = False
    ) -> Event | None:
        """The alarm event, or None when the same alarm is still active (not yet restored)."""
        if self.is_pending(kind):
            return None
        self.pending[RESTORE_OF[kind]] = kind
        if kind.value not in self.memory:
            self.memory.append(kind.value)
        return self.event(kind, at, details, confirmed)

    def restores(self, at: float, details: dict[str, Any]) -> list[Event]:
        """One restore per pending alarm, in the order the alarms were sent; clears them."""
        events = [
            self.event(restore, at, {**details, "restores": alarm.value})
            for restore, alarm in self.pending.items()
        ]
        self.pending.clear()
        return events

    def count_alarm(self, at: float, may_expire: bool) -> int:
        """Count one alarm against the swinger limit; returns the count in the window.

        ``may_expire``: the 24 h window may roll over (24 h zones, or any zone while its
        partition is disarmed); a burglary zone of an armed partition counts until disarm.
        """
        since = self.swinger_since
        if since is not None and may_expire and at - since >= SWINGER_WINDOW_S:
            self.reset_swinger()
        if self.swinger_since is None:
            self.swinger_since = at
        self.swinger_count += 1
        return self.swinger_count

    def reset_swinger(self) -> None:
        self.swinger_count = 0
        self.swinger_since = None

    def swinger_expiry(self) -> float | None:
        """When a swinger shutdown's 24 h window ends (None: no shutdown in progress)."""
        if self.bypass != BYPASS_SWINGER or self.swinger_since is None:
            return None
        return self.swinger_since + SWINGER_WINDOW_S

    def status(self, active: bool) -> dict[str, Any]:
        return {
            "id": self.cfg.id,
            "name": self.cfg.label,
            "type": self.cfg.type,
            "partition": self.cfg.partition,
            "loop": self.loop.value,
            "bypassed": self.bypass is not None,
            "bypass_reason": self.bypass,
            "active": active,
            "alarm_memory": list(self.memory),
            "pending_restore": [alarm.value for alarm in self.pending.values()],
            "swinger_count": self.swinger_count,
            "last_change": self.last_change,
        }
