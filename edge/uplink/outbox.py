"""The outbox: what each transport still owes the central station, kept on disk.

Why a separate SQLite file (WAL, ``synchronous=NORMAL``) and not rows in the journal: the
journal is append-only and hash-chained, while the outbox changes all the time (sends, acks,
retries). The journal (``synchronous=FULL``) stays the source of truth and the outbox is
*derived* from it: :meth:`Outbox.catch_up` enqueues every journal event past a high-water
mark that is committed in the same transaction as the rows it covers. So

- a crash or power cut between a journal append and the outbox insert loses nothing: the
  next ``catch_up`` (at restart) enqueues the event again from the journal;
- a commit lost in a power cut (what NORMAL allows in WAL mode) only rolls the outbox back
  to an earlier consistent state: a lost ack or mark_sent means a harmless resend (event ids
  are stable and the central station ignores duplicates), a lost insert is redone by
  ``catch_up``. Nothing here needs the cost of an fsync per commit.

Each transport (``"mqtt"``, ``"dc09"``) has its own rows, because their acks arrive
independently: an event stays owed to DC-09 after the MQTT central acknowledged it.

Retry times use any clock the caller keeps consistent within one process (time.monotonic).
A time stored by a previous boot means nothing on that clock, so opening the outbox makes
every pending item due at once; a restart resends what was in flight.

Bounded: each transport keeps at most ``max_rows`` pending items. Beyond that the lowest
priority, oldest items are dropped first (telemetry before alarms; an alarm only when the
whole backlog is alarms) and moved to the ``rejected`` table; :meth:`Outbox.overflow` tells
the caller how many were dropped so it can journal the loss. Only one process (the alarm
service) may open the outbox.

A full data disk degrades the outbox instead of stopping it: a write that fails for lack of
space releases the disk reserve and is tried once more, then the change is kept in a bounded
memory overlay (:mod:`edge.uplink.outbox_memory`) and sending goes on from it. The overlay is
written to the file by :meth:`Outbox.flush` once space is back and the journal holds every
event it covers (the file's catch-up mark never runs ahead of the journal's file).
"""

from __future__ import annotations

import contextlib
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edge.disk import LOW_WATER_BYTES, Reserve, free_bytes, is_disk_full
from edge.events import Event
from edge.journal import Journal
from edge.uplink.outbox_memory import MemoryOverlay
from edge.uplink.outbox_schema import (
    CATCH_UP_BATCH,
    REJECTED_KEEP,
    OutboxError,
    OutboxItem,
    backoff_delay,
    journal_replaced,
    new_row,
    outbox_error,
    outbox_path,
    priority_of,
)
from edge.uplink.outbox_store import OutboxStore

__all__ = [
    "REJECTED_KEEP", "Outbox", "OutboxError", "OutboxItem", "backoff_delay", "outbox_path",
    "priority_of",
]  # fmt: skip

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0  # while changes are held in memory, catch_up tries to write them this often
T = TypeVar("T")


class Outbox:
    """Pending sends per transport, fed from the journal, drained by acks.

    Methods are serialised by a lock, so the outbox may be driven from a worker thread
    (``asyncio.to_thread``) like the journal.
    """

    def __init__(
        self,
        path: Path,
        transports: Sequence[str],
        *,
        max_rows: int = 1_000_000,
        backoff_s: tuple[float, float] = (5.0, 300.0),
        rng: random.Random | None = None,
    ) -> None:
        if not transports or len(set(transports)) != len(transports) or not all(transports):
            raise ValueError(f"transports must be distinct non-empty names, got {transports!r}")
        if max_rows < 1 or not 0 < backoff_s[0] <= backoff_s[1]:
            raise ValueError("max_rows must be >= 1 and backoff_s must be (min, max), 0 < min<=max")
        self.path = Path(path)
        self.transports = tuple(transports)
        self.max_rows = max_rows
        self.backoff_s = backoff_s
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._overflow: dict[str, int] = {}
        self._checked = False  # journal identity checked on the first catch_up
        self._mem = MemoryOverlay(self.transports)
        self._reserve = Reserve(self.path.parent)
        self._next_flush = 0.0
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            self._store = OutboxStore(self.path, self.transports, max_rows)
        except (OSError, sqlite3.Error) as exc:
            raise outbox_error(self.path, "open", exc) from exc

    @contextlib.contextmanager
    def _guarded(self, action: str) -> Iterator[OutboxStore]:
        with self._lock:
            try:
                yield self._store
            except sqlite3.Error as exc:
                raise outbox_error(self.path, action, exc) from exc

    def _known(self, transport: str) -> None:
        if transport not in self.transports:
            raise ValueError(
                f"unknown transport {transport!r}: this outbox serves {', '.join(self.transports)}"
            )

    def _write(self, on_file: Callable[[], T], in_memory: Callable[[], T]) -> T:
        """Make one change in the file, or in the memory overlay when the disk is full.

        ``on_file`` must be one transaction. Once anything is held in memory, every change
        goes there until :meth:`flush` succeeds, so the file never sees them out of order.
        A new change (e.g. "send everything now") is one such pair of small functions.
        """
        if not self._mem.active:
            try:
                return on_file()
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise
            if self._reserve.release():
                try:
                    return on_file()
                except sqlite3.Error as exc:
                    if not is_disk_full(exc):
                        raise
            log.error("outbox %s: data disk full: keeping changes in memory", self.path)
        return in_memory()

    def _high(self) -> tuple[int, str]:
        return self._mem.high or self._store.high

    # -- filling ----------------------------------------------------------------------------
    def catch_up(self, journal: Journal) -> int:
        """Enqueue every transmit-kind journal event past the high-water mark, for every
        transport; returns how many events were enqueued. Costs one comparison when the
        journal has nothing new, so it may follow every append."""
        last = journal.last_seq()
        with self._guarded("fill"):
            if self._mem.active and time.monotonic() >= self._next_flush:
                self._flush_locked(journal)
            if not self._checked or last < self._high()[0]:
                if journal_replaced(journal, self._high(), last) and not self._forget_all():
                    return 0  # the disk is full: try again at the next catch_up
                self._checked = True
            added = 0
            while last > self._high()[0]:
                events = journal.since(self._high()[0], CATCH_UP_BATCH)
                if not events:
                    break
                added += self._enqueue(events, journal.durable_seq())
            return added

    def _forget_all(self) -> bool:
        log.error(
            "outbox %s: the journal is not the one the outbox was built from (it ends before "
            "seq %d or holds another event there); its %d pending items are rejected",
            self.path, self._high()[0], sum(map(self.depth_locked, self.transports)),
        )  # fmt: skip
        try:
            self._store.forget_all("journal replaced: the event is no longer in the journal")
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            return False
        self._mem.clear()
        return True

    def _enqueue(self, events: list[Event], durable_seq: int) -> int:
        wanted = [e for e in events if e.kind.spec.transmit]
        rows = {t: [new_row(t, e) for e in wanted] for t in self.transports}
        high = (events[-1].seq, events[-1].id)

        def in_memory() -> dict[str, int]:
            return self._mem.enqueue(rows, high)

        if high[0] > durable_seq:  # the journal holds these in memory: so must we
            dropped = in_memory()
        else:
            dropped = self._write(lambda: self._store.enqueue(rows, high), in_memory)
        self._count_overflow(dropped)
        return len(wanted)

    def _count_overflow(self, dropped: dict[str, int]) -> None:
        for transport, n in dropped.items():
            if n:
                self._overflow[transport] = self._overflow.get(transport, 0) + n
                log.warning("outbox %s full: dropped %d %s items", self.path, n, transport)

    def overflow(self) -> dict[str, int]:
        """Items dropped per transport since the last call (the caller journals the loss)."""
        with self._lock:
            out, self._overflow = self._overflow, {}
            return out

    # -- the disk ---------------------------------------------------------------------------
    def flush(self, journal: Journal) -> bool:
        """Write what the memory overlay holds; True when nothing is left in memory.

        Waits (returns False) while ``journal`` still holds events in memory that the overlay
        covers. Once done, an outbox opened exclusive on a full disk reopens shared.
        """
        with self._guarded("write"):
            return self._flush_locked(journal)

    def _flush_locked(self, journal: Journal) -> bool:
        self._next_flush = time.monotonic() + FLUSH_EVERY_S
        mem = self._mem
        if mem.active:
            if mem.high is not None and mem.high[0] > journal.durable_seq():
                return False
            try:
                dropped = self._store.apply(
                    mem.added_rows(), mem.sent_rows(), mem.removed, mem.rejected, mem.high
                )
            except sqlite3.Error as exc:
                if is_disk_full(exc):
                    return False
                raise
            log.info("outbox %s: wrote %d changes held in memory", self.path, mem.size())
            mem.clear()
            self._count_overflow(dropped)
        if self._store.exclusive and free_bytes(self.path.parent) >= LOW_WATER_BYTES:
            self._store.reopen()
        return True

    def held(self) -> int:
        """Changes (new items, sends, acks) kept in memory for lack of disk space."""
        with self._lock:
            return self._mem.size()

    def checkpoint(self) -> bool:
        """Empty the write-ahead log into the file (see :func:`edge.sqlite_wal.checkpoint`)."""
        with self._guarded("checkpoint") as store:
            return store.checkpoint()

    # -- draining ---------------------------------------------------------------------------
    def due(self, transport: str, now: float, limit: int = 100) -> list[OutboxItem]:
        """Unacked items whose retry time has come, in send order: priority, then seq."""
        self._known(transport)
        with self._guarded("read") as store:
            if not self._mem.active:
                return store.due(transport, now, limit)
            on_file = store.due(transport, now, limit + self._mem.shadowed(transport))
            return self._mem.due(transport, now, limit, on_file)

    def oldest(self, transport: str, limit: int = 100, after: int = 0) -> list[OutboxItem]:
        """The oldest unacked items past seq ``after`` in journal order, whatever their retry
        time: for a transport that sends strictly in order on its own schedule (DC-09, and
        the MQTT sender's passes over the backlog)."""
        self._known(transport)
        with self._guarded("read") as store:
            if not self._mem.active:
                return store.in_order(transport, limit, after)
            on_file = store.in_order(transport, limit + self._mem.shadowed(transport), after)
            return self._mem.in_order(transport, limit, on_file, after)

    def next_try(self, transport: str) -> float | None:
        """The earliest retry time of a transport (None when nothing is pending): how long
        a sender may sleep when :meth:`due` returned nothing."""
        self._known(transport)
        with self._guarded("read") as store:
            if not self._mem.active:
                return store.soonest(transport)
            return self._mem.soonest(transport, store)

    def mark_sent(self, transport: str, seqs: Sequence[int], now: float) -> None:
        """Record one more send of each item and when to resend it if no ack comes."""
        self._known(transport)
        unique = list(dict.fromkeys(seqs))

        def delay(attempts: int) -> float:
            return backoff_delay(attempts, self.backoff_s, self._rng)

        with self._guarded("write") as store:
            self._write(
                lambda: store.mark_sent(transport, unique, now, delay),
                lambda: self._mem.mark_sent(transport, unique, now, delay, store),
            )

    def ack(self, transport: str, event_ids: Sequence[str]) -> int:
        """Forget acknowledged items; returns how many were pending (repeats are harmless)."""
        self._known(transport)
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return 0
        with self._guarded("write") as store:
            return self._write(
                lambda: store.ack(transport, ids), lambda: self._mem.ack(transport, ids, store)
            )

    def reject(self, transport: str, seq: int, reason: str) -> None:
        """Give up on one item (e.g. a DC-09 DUH): keep it in the rejected table with why."""
        self._known(transport)
        with self._guarded("write") as store:
            moved = self._write(
                lambda: store.reject(transport, [seq], reason),
                lambda: self._mem.reject(transport, seq, reason, store),
            )
        if moved:
            log.warning("outbox: %s gave up on seq %d: %s", transport, seq, reason)

    # -- reading ----------------------------------------------------------------------------
    def depth(self, transport: str) -> int:
        self._known(transport)
        with self._lock:
            return self.depth_locked(transport)

    def depth_locked(self, transport: str) -> int:
        return self._mem.depth(transport, self._store.depth[transport])

    def oldest_unacked_age_s(self, transport: str, now_wall: float) -> float | None:
        """Age of the oldest owed event (journal order), from its journal timestamp."""
        self._known(transport)
        with self._guarded("read"):
            oldest = self._first_owed(transport)
        return None if oldest is None else max(0.0, now_wall - oldest[1])

    def _first_owed(self, transport: str) -> tuple[int, float] | None:
        if self._mem.active:
            return self._mem.oldest(transport, self._store)
        first = self._store.first(transport, "seq", 1)
        return (first[0][0], first[0][2]) if first else None

    def oldest_pending_seq(self) -> int | None:
        """Lowest journal seq still owed on any transport: the journal must keep it."""
        with self._guarded("read"):
            seqs = [o[0] for o in map(self._first_owed, self.transports) if o is not None]
        return min(seqs) if seqs else None

    def stats(self, now_wall: float | None = None) -> dict[str, dict[str, Any]]:
        """Per transport: depth, oldest_s (age of the oldest owed event), rejected (kept)."""
        now_wall = time.time() if now_wall is None else now_wall
        out: dict[str, dict[str, Any]] = {}
        for t in self.transports:
            with self._guarded("read") as store:
                rejected = store.count("rejected", t) + self._mem.rejected_count(t)
            out[t] = {"depth": self.depth(t), "oldest_s": self.oldest_unacked_age_s(t, now_wall),
                      "rejected": min(rejected, REJECTED_KEEP)}  # fmt: skip
        return out

    def close(self) -> None:
        with self._lock:
            if self._mem.active:
                log.warning(
                    "outbox %s: %d changes held in memory are not written (disk full); the "
                    "next start enqueues their events again from the journal",
                    self.path, self._mem.size(),
                )  # fmt: skip
            self._store.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
