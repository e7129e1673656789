"""What the outbox changed while its file could not be written (the data disk is full).

Why an overlay and not a copy of the file in memory: memory then grows with what happens
during the outage (new events, sends, acks), not with the size of the backlog, and writing it
back needs about as much space as the changes themselves. Reads of the file still work on a
full disk, so the facade answers from both: file rows, minus what the overlay removed, with
the send state it changed, plus the items it added.

Bounded: at most ``max_items`` added items per transport (beyond, the lowest priority, oldest
are dropped, as the file's own bound does), and as many changed or removed file rows. A send
or an ack that finds no room is simply not remembered: the item is sent again later, which
the central station and receivers treat as a duplicate.

Nothing here survives a restart, and nothing needs to: the file's catch-up mark never moves
past what is in it, so the next start enqueues the same events again from the journal.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from edge.uplink.outbox_schema import LOWEST_FIRST, REJECTED_KEEP, OutboxItem, Row
from edge.uplink.outbox_store import OutboxStore, RejectedRow

MAX_ITEMS = 4096

SentState = tuple[int, "float | None", float]  # attempts, first_sent, next_try


@dataclasses.dataclass
class Held:
    """An item enqueued while the disk was full (not in the file)."""

    transport: str
    priority: int
    seq: int
    event_id: str
    ts: float
    attempts: int
    first_sent: float | None
    next_try: float

    def item(self) -> OutboxItem:
        return OutboxItem(self.transport, self.seq, self.event_id, self.priority,
                          self.attempts, self.first_sent, self.next_try)  # fmt: skip

    def row(self) -> Row:
        return (self.transport, self.priority, self.seq, self.event_id, self.ts,
                self.attempts, self.first_sent, self.next_try)  # fmt: skip


class MemoryOverlay:
    """Added items, changed send states and removed rows per transport, and the catch-up mark."""

    def __init__(self, transports: Sequence[str], max_items: int = MAX_ITEMS) -> None:
        self.transports = tuple(transports)
        self.max_items = max_items
        self.clear()

    def clear(self) -> None:
        t = self.transports
        self.added: dict[str, dict[int, Held]] = {x: {} for x in t}
        self.ids: dict[str, dict[str, int]] = {x: {} for x in t}
        self.sent: dict[str, dict[int, SentState]] = {x: {} for x in t}  # file rows
        self.removed: dict[str, dict[int, str | None]] = {x: {} for x in t}  # None: acked
        self.rejected: list[RejectedRow] = []  # added items given up on
        self.high: tuple[int, str] | None = None

    @property
    def active(self) -> bool:
        return (
            self.high is not None
            or self.rejected != []
            or any(self.added[t] or self.sent[t] or self.removed[t] for t in self.transports)
        )

    def size(self) -> int:
        """Changes not in the file yet."""
        parts = (self.added, self.sent, self.removed)
        return len(self.rejected) + sum(len(p[t]) for p in parts for t in self.transports)

    def shadowed(self, transport: str) -> int:
        """File rows whose state the overlay changes: how many more a file read must fetch."""
        return len(self.sent[transport]) + len(self.removed[transport])

    # -- changes ----------------------------------------------------------------------------
    def enqueue(self, rows: dict[str, list[Row]], high: tuple[int, str]) -> dict[str, int]:
        dropped: dict[str, int] = {}
        for transport, items in rows.items():
            added = self.added[transport]
            for row in items:
                if row[2] not in added:
                    added[row[2]] = Held(*row)
                    self.ids[transport][row[3]] = row[2]
            dropped[transport] = self._bound(transport)
        self.high = high
        return dropped

    def _bound(self, transport: str) -> int:
        added, excess = self.added[transport], len(self.added[transport]) - self.max_items
        if excess <= 0:
            return 0
        order = sorted(added.values(), key=lambda h: (LOWEST_FIRST.index(h.priority), h.seq))
        for held in order[:excess]:
            self._forget(transport, held.seq)
        return excess

    def _forget(self, transport: str, seq: int) -> Held:
        held = self.added[transport].pop(seq)
        self.ids[transport].pop(held.event_id, None)
        return held

    def mark_sent(
        self,
        transport: str,
        seqs: Sequence[int],
        now: float,
        delay: Callable[[int], float],
        store: OutboxStore,
    ) -> None:
        added, sent, removed = self.added[transport], self.sent[transport], self.removed[transport]
        on_file = [s for s in seqs if s not in added and s not in removed and s not in sent]
        states = {s: (n, first) for s, (n, first, _) in sent.items() if s in seqs}
        states.update(store.sent_state(transport, on_file))
        for seq in seqs:
            if seq in added:
                held = added[seq]
                held.attempts += 1
                held.first_sent = now if held.first_sent is None else held.first_sent
                held.next_try = now + delay(held.attempts)
            elif seq in states and (seq in sent or len(sent) < self.max_items):
                n, first = states[seq]
                sent[seq] = (n + 1, now if first is None else first, now + delay(n + 1))

    def ack(self, transport: str, event_ids: Sequence[str], store: OutboxStore) -> int:
        done = 0
        removed = self.removed[transport]
        for event_id in event_ids:
            seq = self.ids[transport].get(event_id)
            if seq is not None:
                self._forget(transport, seq)
                done += 1
                continue
            seq = store.seq_of(transport, event_id)
            if seq is not None and seq not in removed and len(removed) < self.max_items:
                removed[seq] = None
                self.sent[transport].pop(seq, None)
                done += 1
        return done

    def reject(self, transport: str, seq: int, reason: str, store: OutboxStore) -> int:
        if seq in self.added[transport]:
            h = self._forget(transport, seq)
            if len(self.rejected) < min(self.max_items, REJECTED_KEEP):
                self.rejected.append((transport, seq, h.event_id, h.priority, h.ts, h.attempts,
                                      reason, time.time()))  # fmt: skip
            return 1
        removed = self.removed[transport]
        if seq in removed or len(removed) >= self.max_items or store.item(transport, seq) is None:
            return 0
        removed[seq] = reason
        self.sent[transport].pop(seq, None)
        return 1

    # -- reads, merged with the file ---------------------------------------------------------
    def due(
        self, transport: str, now: float, limit: int, on_file: list[OutboxItem]
    ) -> list[OutboxItem]:
        """``on_file``: the file's due items, fetched with ``limit + shadowed()``."""
        out = [i for i in self._merged(transport, on_file) if i.next_try <= now]
        out.sort(key=lambda i: (i.priority, i.seq))
        return out[:limit]

    def in_order(
        self, transport: str, limit: int, on_file: list[OutboxItem], after: int = 0
    ) -> list[OutboxItem]:
        """``on_file``: the file's first items by seq past ``after``, fetched with
        ``limit + shadowed()``."""
        merged = [i for i in self._merged(transport, on_file) if i.seq > after]
        return sorted(merged, key=lambda i: i.seq)[:limit]

    def _merged(self, transport: str, on_file: list[OutboxItem]) -> list[OutboxItem]:
        """File items minus the removed, with their changed send state, plus the added."""
        sent, removed = self.sent[transport], self.removed[transport]
        out: list[OutboxItem] = []
        for item in on_file:
            if item.seq in removed:
                continue
            if item.seq in sent:
                n, first, next_try = sent[item.seq]
                item = dataclasses.replace(item, attempts=n, first_sent=first, next_try=next_try)
            out.append(item)
        return out + [h.item() for h in self.added[transport].values()]

    def soonest(self, transport: str, store: OutboxStore) -> float | None:
        shadow = self.shadowed(transport)
        times = [h.next_try for h in self.added[transport].values()]
        times += [state[2] for state in self.sent[transport].values()]
        for seq, next_try, _ in store.first(transport, "next_try", shadow + 1):
            if seq not in self.sent[transport] and seq not in self.removed[transport]:
                times.append(next_try)
                break
        return min(times) if times else None

    def oldest(self, transport: str, store: OutboxStore) -> tuple[int, float] | None:
        """(seq, ts) of the oldest item still owed on this transport."""
        removed = self.removed[transport]
        for seq, _, ts in store.first(transport, "seq", len(removed) + 1):
            if seq not in removed:
                return seq, ts
        added = self.added[transport]
        if not added:
            return None
        seq = min(added)
        return seq, added[seq].ts

    def depth(self, transport: str, on_file: int) -> int:
        return on_file - len(self.removed[transport]) + len(self.added[transport])

    def rejected_count(self, transport: str) -> int:
        given_up = sum(1 for r in self.removed[transport].values() if r is not None)
        return given_up + sum(1 for r in self.rejected if r[0] == transport)

    def sent_rows(self) -> list[tuple[int, float | None, float, str, int]]:
        """UPDATE parameters of the changed file rows."""
        return [(n, first, next_try, t, seq) for t in self.transports
                for seq, (n, first, next_try) in self.sent[t].items()]  # fmt: skip

    def added_rows(self) -> list[Row]:
        return [h.row() for t in self.transports for h in self.added[t].values()]
