"""Events chained while the data disk is full: held in memory, in order, until written.

Why chained in memory rather than refused: detection, the siren rule and transmission must
go on when the disk is full. An event that cannot be committed still gets the seq, ``prev``
and ``hash`` a committed row would have had, so it is transmitted at once and later written
exactly as it was sent: `edge events verify` passes over it and the chain the central
station received matches the file. What it costs: until written, such an event is not
durable — a crash or power cut before space returns loses it (it was transmitted if a path
was up); see docs/maintenance.md "Data disk full".

Bounded: at most :data:`MAX_EVENTS` rows. From 90 % on, local-only kinds (never transmitted)
are refused to keep room for alarms; at 100 % every new event is refused. Refused events
are counted in ``lost`` and reported with the disk-full restore.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from edge.events import Event

MAX_EVENTS = 4096


@dataclasses.dataclass(frozen=True)
class HeldRow:
    """One chained event: as readers get it back, and the INSERT parameters as hashed."""

    event: Event
    values: tuple[Any, ...]


class MemoryTail:
    """Contiguous rows after the last committed seq; the oldest is written first."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.max_events = max_events
        self.local_only_from = max_events * 9 // 10
        self.rows: list[HeldRow] = []
        self._ids: dict[str, Event] = {}
        self.lost = 0  # events refused since the process started
        self.peak = 0  # most rows held at once since the last reset_peak()

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, event: Event) -> bool:
        """May ``event`` be held? Counts a refusal in ``lost``."""
        held = len(self.rows)
        ok = held < self.max_events and (held < self.local_only_from or event.kind.spec.transmit)
        if not ok:
            self.lost += 1
        return ok

    def add(self, row: HeldRow) -> None:
        if self.rows and row.event.seq != self.rows[-1].event.seq + 1:
            raise ValueError(f"held seq {row.event.seq} does not follow {self.rows[-1].event.seq}")
        self.rows.append(row)
        self._ids[row.event.id] = row.event
        self.peak = max(self.peak, len(self.rows))

    def head(self, n: int) -> list[HeldRow]:
        return self.rows[:n]

    def drop_head(self, n: int) -> None:
        """The oldest ``n`` rows are committed now: forget them."""
        for row in self.rows[:n]:
            self._ids.pop(row.event.id, None)
        del self.rows[:n]

    def reset_peak(self) -> int:
        peak, self.peak = self.peak, len(self.rows)
        return peak

    # -- reading (the journal merges these with what is on disk) -------------------------
    def get(self, event_id: str) -> Event | None:
        return self._ids.get(event_id)

    def since(self, seq: int, limit: int) -> list[Event]:
        if not self.rows or limit <= 0:
            return []
        start = max(0, seq + 1 - self.rows[0].event.seq)
        return [row.event for row in self.rows[start : start + limit]]

    def by_seqs(self, seqs: Sequence[int]) -> dict[int, Event]:
        if not self.rows:
            return {}
        first, n = self.rows[0].event.seq, len(self.rows)
        return {s: self.rows[s - first].event for s in seqs if 0 <= s - first < n}

    def matching(self, since_ts: str | None, zone: str | None) -> list[Event]:
        return [
            row.event
            for row in self.rows
            if (since_ts is None or row.event.ts >= since_ts)
            and (zone is None or row.event.zone_id == zone)
        ]
