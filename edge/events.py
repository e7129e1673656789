"""Event kinds and their alarm-industry codes.

Every event the box produces has one kind, and every kind maps one-to-one onto a SIA DC-07
event code and a Contact ID (CID) code with its qualifier, so that the same journal row can be
sent to the central station over MQTT and to an alarm receiver over SIA DC-09 without any
translation table elsewhere. Kinds that are only of local interest have no codes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from enum import Enum
from typing import Any


class Category(str, Enum):
    """Broad family of a kind; drives priority and the words an operator reads."""

    ALARM = "alarm"
    RESTORE = "restore"
    TAMPER = "tamper"
    FAULT = "fault"
    ARMING = "arming"
    BYPASS = "bypass"
    SYSTEM = "system"
    LOCAL = "local"


@dataclasses.dataclass(frozen=True)
class KindSpec:
    """Codes and wording of one event kind."""

    sia: str | None
    cid: int | None
    qualifier: int  # Contact ID: 1 new event / opening, 3 restore / closing
    category: Category
    label: str
    transmit: bool = True  # must reach the central station


class Kind(str, Enum):
    """Every event kind the box can journal."""

    BURGLARY = "burglary"
    BURGLARY_RESTORE = "burglary_restore"
    BURGLARY_CONFIRMED = "burglary_confirmed"
    BURGLARY_CANCEL = "burglary_cancel"
    FIRE = "fire"
    FIRE_RESTORE = "fire_restore"
    PANIC = "panic"
    PANIC_RESTORE = "panic_restore"
    HOLDUP = "holdup"
    HOLDUP_RESTORE = "holdup_restore"
    TAMPER = "tamper"
    TAMPER_RESTORE = "tamper_restore"
    FLOOD = "flood"
    FLOOD_RESTORE = "flood_restore"
    FREEZER = "freezer"
    FREEZER_RESTORE = "freezer_restore"
    MAINS_LOSS = "mains_loss"
    MAINS_RESTORE = "mains_restore"
    LOW_BATTERY = "low_battery"
    BATTERY_RESTORE = "battery_restore"
    TECHNICAL = "technical"
    TECHNICAL_RESTORE = "technical_restore"
    LOOP_FAULT = "loop_fault"
    LOOP_FAULT_RESTORE = "loop_fault_restore"
    FIRE_LOOP_FAULT = "fire_loop_fault"
    FIRE_LOOP_FAULT_RESTORE = "fire_loop_fault_restore"
    BYPASS = "bypass"
    UNBYPASS = "unbypass"
    SWINGER_SHUTDOWN = "swinger_shutdown"
    ARMED = "armed"
    PART_SET = "part_set"
    DISARMED = "disarmed"
    ARM_FAILED = "arm_failed"
    ARM_REFUSED = "arm_refused"
    EXIT_DELAY = "exit_delay"
    ENTRY_DELAY = "entry_delay"
    OUTPUT_ON = "output_on"
    OUTPUT_OFF = "output_off"
    SIREN_CUTOFF = "siren_cutoff"
    COMM_TROUBLE = "comm_trouble"
    COMM_RESTORE = "comm_restore"
    RECEIVER_PATH_FAIL = "receiver_path_fail"
    RECEIVER_PATH_RESTORE = "receiver_path_restore"
    TRANSMISSION_REJECTED = "transmission_rejected"
    COMMAND_EXECUTED = "command_executed"
    COMMAND_REFUSED = "command_refused"
    SERVICE_STARTED = "service_started"
    SERVICE_STOPPED = "service_stopped"
    DISK_FULL = "disk_full"
    DISK_FULL_RESTORE = "disk_full_restore"
    TRANSMISSION_LOST = "transmission_lost"
    TRANSMISSION_RESTORE = "transmission_restore"
    CLOCK_FAULT = "clock_fault"
    CLOCK_RESTORE = "clock_restore"
    ARM_FORCED = "arm_forced"
    JOURNAL_PRUNED = "journal_pruned"
    VIDEO_LOSS = "video_loss"
    VIDEO_RESTORE = "video_restore"
    CAMERA_FAULT = "camera_fault"
    CAMERA_FAULT_RESTORE = "camera_fault_restore"
    VIDEO_MOTION = "video_motion"
    CLIP_SAVED = "clip_saved"
    CLIP_DELETED = "clip_deleted"
    CLIP_MISSED = "clip_missed"
    LIVE_STARTED = "live_started"
    LIVE_ENDED = "live_ended"
    LIVE_REFUSED = "live_refused"
    LIVE_ACTION = "live_action"
    VIDEO_PATROL = "video_patrol"

    @property
    def spec(self) -> KindSpec:
        return SPECS[self]


_A, _R, _T, _F = Category.ALARM, Category.RESTORE, Category.TAMPER, Category.FAULT
_ARM, _BY, _SYS, _LOC = Category.ARMING, Category.BYPASS, Category.SYSTEM, Category.LOCAL

SPECS: dict[Kind, KindSpec] = {
    Kind.BURGLARY: KindSpec("BA", 130, 1, _A, "burglary alarm"),
    Kind.BURGLARY_RESTORE: KindSpec("BR", 130, 3, _R, "burglary restore"),
    Kind.BURGLARY_CONFIRMED: KindSpec("BV", 139, 1, _A, "confirmed burglary alarm"),
    Kind.BURGLARY_CANCEL: KindSpec("BC", 406, 1, _ARM, "alarm cancelled by disarm"),
    Kind.FIRE: KindSpec("FA", 110, 1, _A, "fire alarm"),
    Kind.FIRE_RESTORE: KindSpec("FR", 110, 3, _R, "fire restore"),
    Kind.PANIC: KindSpec("PA", 120, 1, _A, "panic alarm"),
    Kind.PANIC_RESTORE: KindSpec("PR", 120, 3, _R, "panic restore"),
    Kind.HOLDUP: KindSpec("HA", 122, 1, _A, "hold-up alarm"),
    Kind.HOLDUP_RESTORE: KindSpec("HR", 122, 3, _R, "hold-up restore"),
    Kind.TAMPER: KindSpec("TA", 137, 1, _T, "tamper"),
    Kind.TAMPER_RESTORE: KindSpec("TR", 137, 3, _R, "tamper restore"),
    Kind.FLOOD: KindSpec("WA", 154, 1, _A, "flood alarm"),
    Kind.FLOOD_RESTORE: KindSpec("WH", 154, 3, _R, "flood restore"),
    Kind.FREEZER: KindSpec("ZA", 159, 1, _A, "freezer / low temperature alarm"),
    Kind.FREEZER_RESTORE: KindSpec("ZH", 159, 3, _R, "freezer restore"),
    Kind.MAINS_LOSS: KindSpec("AT", 301, 1, _F, "mains power lost"),
    Kind.MAINS_RESTORE: KindSpec("AR", 301, 3, _R, "mains power restored"),
    Kind.LOW_BATTERY: KindSpec("YT", 302, 1, _F, "low battery"),
    Kind.BATTERY_RESTORE: KindSpec("YR", 302, 3, _R, "battery restored"),
    Kind.TECHNICAL: KindSpec("UA", 150, 1, _A, "technical alarm"),
    Kind.TECHNICAL_RESTORE: KindSpec("UH", 150, 3, _R, "technical restore"),
    Kind.LOOP_FAULT: KindSpec("BT", 380, 1, _F, "loop fault (reading between bands)"),
    Kind.LOOP_FAULT_RESTORE: KindSpec("BJ", 380, 3, _R, "loop fault restore"),
    Kind.FIRE_LOOP_FAULT: KindSpec("FT", 373, 1, _F, "fire loop fault"),
    Kind.FIRE_LOOP_FAULT_RESTORE: KindSpec("FJ", 373, 3, _R, "fire loop fault restore"),
    Kind.BYPASS: KindSpec("BB", 570, 1, _BY, "zone bypassed"),
    Kind.UNBYPASS: KindSpec("BU", 570, 3, _BY, "zone unbypassed"),
    Kind.SWINGER_SHUTDOWN: KindSpec("BB", 570, 1, _BY, "zone shut down (too many alarms)"),
    Kind.ARMED: KindSpec("CL", 401, 3, _ARM, "armed"),
    Kind.PART_SET: KindSpec("NL", 441, 3, _ARM, "part-set armed"),
    Kind.DISARMED: KindSpec("OP", 401, 1, _ARM, "disarmed"),
    Kind.ARM_FAILED: KindSpec("CI", 454, 1, _ARM, "scheduled arming failed"),
    Kind.ARM_REFUSED: KindSpec(None, None, 1, _LOC, "arming refused", transmit=False),
    Kind.EXIT_DELAY: KindSpec(None, None, 1, _LOC, "exit delay started", transmit=False),
    Kind.ENTRY_DELAY: KindSpec(None, None, 1, _LOC, "entry delay started", transmit=False),
    Kind.OUTPUT_ON: KindSpec(None, None, 1, _LOC, "output on", transmit=False),
    Kind.OUTPUT_OFF: KindSpec(None, None, 3, _LOC, "output off", transmit=False),
    Kind.SIREN_CUTOFF: KindSpec(None, None, 3, _LOC, "siren cut off", transmit=False),
    Kind.COMM_TROUBLE: KindSpec("YC", 350, 1, _F, "communication with the central station lost"),
    Kind.COMM_RESTORE: KindSpec("YK", 350, 3, _R, "communication with the central station back"),
    Kind.RECEIVER_PATH_FAIL: KindSpec("YS", 354, 1, _F, "alarm receiver path failed"),
    Kind.RECEIVER_PATH_RESTORE: KindSpec("YK", 354, 3, _R, "alarm receiver path back"),
    Kind.TRANSMISSION_REJECTED: KindSpec(
        None, None, 1, _LOC, "event rejected by the receiver", transmit=False
    ),
    Kind.COMMAND_EXECUTED: KindSpec(None, None, 1, _LOC, "remote command executed", transmit=False),
    Kind.COMMAND_REFUSED: KindSpec(None, None, 1, _LOC, "remote command refused", transmit=False),
    Kind.SERVICE_STARTED: KindSpec("RR", 305, 1, _SYS, "alarm service started"),
    # A clean stop (SIGTERM, restart command): over MQTT only, so the station can tell a stop
    # from a crash; a DC-09 receiver sees only the RR / 305 of the next start.
    Kind.SERVICE_STOPPED: KindSpec(None, None, 1, _SYS, "alarm service stopped"),
    # Contact ID 300 "system trouble" (SIA YX service required / YZ service completed): a
    # condition with a restore, which receivers map to the same pair (see docs/protocol.md).
    Kind.DISK_FULL: KindSpec("YX", 300, 1, _F, "data disk full"),
    Kind.DISK_FULL_RESTORE: KindSpec("YZ", 300, 3, _R, "data disk space back"),
    Kind.JOURNAL_PRUNED: KindSpec(None, None, 1, _LOC, "journal pruned", transmit=False),
    # Journaled by edge-alarm's diagnostics (edge.diag.runner) once a check's hold-off passed.
    # Every path down: SIA NT / NR "network failure / restoral"; Contact ID has no code of
    # its own for it and receivers show 350 "communication trouble". Sent once a path is back.
    Kind.TRANSMISSION_LOST: KindSpec("NT", 350, 1, _F, "every transmission path down"),
    Kind.TRANSMISSION_RESTORE: KindSpec("NR", 350, 3, _R, "a transmission path back"),
    # Clock never set or not synchronised: Contact ID 626 "time / date inaccurate"; SIA has
    # no pair with a restore for it, so YX / YZ "service required / completed", as disk_full.
    Kind.CLOCK_FAULT: KindSpec("YX", 626, 1, _F, "clock not set or not synchronised"),
    Kind.CLOCK_RESTORE: KindSpec("YZ", 626, 3, _R, "clock synchronised again"),
    # Arming forced over failing diagnostics (who, which faults): MQTT only, no code fits.
    Kind.ARM_FORCED: KindSpec(None, None, 1, _ARM, "armed over faults (forced)"),
    # Video has no SIA / Contact ID codes: these go to the central station over MQTT only.
    Kind.VIDEO_LOSS: KindSpec(None, None, 1, _F, "video lost"),
    Kind.VIDEO_RESTORE: KindSpec(None, None, 3, _R, "video back"),
    Kind.CAMERA_FAULT: KindSpec(None, None, 1, _F, "camera fault"),
    Kind.CAMERA_FAULT_RESTORE: KindSpec(None, None, 3, _R, "camera fault cleared"),
    Kind.VIDEO_MOTION: KindSpec(None, None, 1, _A, "video motion alarm"),
    Kind.CLIP_SAVED: KindSpec(None, None, 1, _LOC, "video clip saved", transmit=False),
    Kind.CLIP_DELETED: KindSpec(None, None, 1, _LOC, "video clip deleted", transmit=False),
    Kind.CLIP_MISSED: KindSpec(None, None, 1, _LOC, "no video clip for an alarm", transmit=False),
    # Access to live video is audited here and reported to the central station.
    Kind.LIVE_STARTED: KindSpec(None, None, 1, _LOC, "live view started"),
    Kind.LIVE_ENDED: KindSpec(None, None, 3, _LOC, "live view ended"),
    Kind.LIVE_REFUSED: KindSpec(None, None, 1, _LOC, "live view refused"),
    Kind.LIVE_ACTION: KindSpec(None, None, 1, _LOC, "tele-action from live view"),
    Kind.VIDEO_PATROL: KindSpec(None, None, 1, _LOC, "video patrol"),
}

# The kind a zone produces when it restores, keyed by the kind of its alarm / fault.
RESTORE_OF: dict[Kind, Kind] = {
    Kind.BURGLARY: Kind.BURGLARY_RESTORE,
    Kind.BURGLARY_CONFIRMED: Kind.BURGLARY_RESTORE,
    Kind.FIRE: Kind.FIRE_RESTORE,
    Kind.PANIC: Kind.PANIC_RESTORE,
    Kind.HOLDUP: Kind.HOLDUP_RESTORE,
    Kind.TAMPER: Kind.TAMPER_RESTORE,
    Kind.FLOOD: Kind.FLOOD_RESTORE,
    Kind.FREEZER: Kind.FREEZER_RESTORE,
    Kind.MAINS_LOSS: Kind.MAINS_RESTORE,
    Kind.LOW_BATTERY: Kind.BATTERY_RESTORE,
    Kind.TECHNICAL: Kind.TECHNICAL_RESTORE,
    Kind.LOOP_FAULT: Kind.LOOP_FAULT_RESTORE,
    Kind.FIRE_LOOP_FAULT: Kind.FIRE_LOOP_FAULT_RESTORE,
    Kind.COMM_TROUBLE: Kind.COMM_RESTORE,
    Kind.RECEIVER_PATH_FAIL: Kind.RECEIVER_PATH_RESTORE,
}


def utc_now_iso() -> str:
    """UTC timestamp with milliseconds and a Z suffix (ISO 8601), as the protocol specifies."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclasses.dataclass(frozen=True)
class Event:
    """One journal entry before (``seq == 0``) or after it was committed.

    ``id`` is unique and stable: the same event resent over any path keeps it.
    """

    kind: Kind
    zone_id: str | None = None
    zone_name: str | None = None
    partition: str | None = None
    confirmed: bool = False
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    ts: str = dataclasses.field(default_factory=utc_now_iso)
    mono_ns: int = dataclasses.field(default_factory=time.monotonic_ns)
    seq: int = 0
    prev: str = ""
    hash: str = ""

    @property
    def sia(self) -> str | None:
        return self.kind.spec.sia

    @property
    def cid(self) -> int | None:
        return self.kind.spec.cid

    @property
    def qualifier(self) -> int:
        return self.kind.spec.qualifier

    @property
    def category(self) -> Category:
        return self.kind.spec.category

    def to_dict(self) -> dict[str, Any]:
        """The payload published on the bus (``edge/events``) and, with ``v``, centrally."""
        return {
            "v": 1,
            "id": self.id,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind.value,
            "category": self.category.value,
            "sia": self.sia,
            "cid": self.cid,
            "qualifier": self.qualifier,
            "zone": self.zone_id,
            "zone_name": self.zone_name,
            "partition": self.partition,
            "confirmed": self.confirmed,
            "details": self.details,
            "prev": self.prev,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(
            kind=Kind(data["kind"]),
            zone_id=data.get("zone"),
            zone_name=data.get("zone_name"),
            partition=data.get("partition"),
            confirmed=bool(data.get("confirmed", False)),
            details=dict(data.get("details") or {}),
            id=data["id"],
            ts=data["ts"],
            mono_ns=int(data.get("mono_ns", 0)),
            seq=int(data.get("seq", 0)),
            prev=data.get("prev", ""),
            hash=data.get("hash", ""),
        )


def describe(event: Event) -> str:
    """One line an operator reads at 3 a.m.: what, where, codes."""
    spec = event.kind.spec
    where = ""
    if event.zone_id:
        named = event.zone_name and event.zone_name != event.zone_id
        name = f" ({event.zone_name})" if named else ""
        where = f" zone {event.zone_id}{name}"
    if event.partition:
        where += f" [partition {event.partition}]"
    codes = f" {spec.sia}/{spec.cid}" if spec.sia else ""
    extra = ""
    if event.details:
        extra = " — " + ", ".join(f"{k}={v}" for k, v in sorted(event.details.items()))
    label = spec.label.upper() if spec.category in (Category.ALARM, Category.TAMPER) else spec.label
    return f"#{event.seq} {event.ts} {label}{where}{codes}{extra}"
