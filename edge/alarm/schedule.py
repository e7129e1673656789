"""Arming schedules: which arm / disarm times fall due at a given wall-clock time.

Each (partition, schedule, action) fires at most once per occurrence, remembered by the
occurrence's own date and time, so a ticker running every few milliseconds fires it once and
a wall clock stepped back by NTP does not fire it again. A tick that jumps past a time (the
service paused, the event loop was busy) still fires it as long as the time is less than
``GRACE_S`` old; older occurrences are skipped on purpose: a box booting at 09:00 must not
arm because a schedule said so at 06:00 while it was off.

Wall time is an aware datetime in the site time zone; occurrences are built in that zone, so
the schedule follows local time across daylight-saving changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Literal

from edge.config.models import Partition

GRACE_S = 120.0
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclasses.dataclass(frozen=True)
class ScheduledAction:
    """One due arm or disarm."""

    partition: str
    action: Literal["arm", "disarm"]
    mode: Literal["full", "part"]
    at: dt.datetime
    schedule: int


@dataclasses.dataclass(frozen=True)
class _Slot:
    partition: str
    schedule: int
    action: Literal["arm", "disarm"]
    mode: Literal["full", "part"]
    days: frozenset[str]
    time: dt.time


class ScheduleRunner:
    """Every schedule slot of the site and the last occurrence each one fired."""

    def __init__(self, partitions: Iterable[Partition]) -> None:
        self._slots: list[_Slot] = []
        for part in partitions:
            for index, sched in enumerate(part.schedules):
                days = frozenset(sched.days)
                self._slots.append(_Slot(part.id, index, "arm", sched.mode, days, _hhmm(sched.arm)))
                if sched.disarm is not None:
                    self._slots.append(
                        _Slot(part.id, index, "disarm", sched.mode, days, _hhmm(sched.disarm))
                    )
        self._fired: dict[_Slot, dt.datetime] = {}

    def due(self, wall: dt.datetime) -> list[ScheduledAction]:
        """Actions whose time came within the grace period and that did not fire yet, oldest
        first; marks them fired."""
        found: list[ScheduledAction] = []
        for slot in self._slots:
            occurrence = self._occurrence(slot, wall)
            if occurrence is None:
                continue
            last = self._fired.get(slot)
            if last is not None and occurrence <= last:
                continue
            self._fired[slot] = occurrence
            found.append(
                ScheduledAction(slot.partition, slot.action, slot.mode, occurrence, slot.schedule)
            )
        found.sort(key=lambda a: a.at)
        return found

    @staticmethod
    def _occurrence(slot: _Slot, wall: dt.datetime) -> dt.datetime | None:
        """The latest occurrence of ``slot`` not after ``wall`` and within the grace period
        (yesterday's counts too, for a time just before midnight)."""
        for back in (0, 1):
            day = wall.date() - dt.timedelta(days=back)
            if DAYS[day.weekday()] not in slot.days:
                continue
            occurrence = dt.datetime.combine(day, slot.time, tzinfo=wall.tzinfo)
            if occurrence <= wall:
                age = (wall - occurrence).total_seconds()
                return occurrence if age <= GRACE_S else None
        return None


def _hhmm(text: str) -> dt.time:
    hours, minutes = text.split(":")
    return dt.time(int(hours), int(minutes))
