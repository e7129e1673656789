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
"""

from __future__ import annotations

import contextlib
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.events import Category, Event, Kind
from edge.journal import Journal, parse_iso
from edge.sqlite_tx import immediate

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.db"
SCHEMA_VERSION = 1
CATCH_UP_BATCH = 1000  # journal rows read and committed per transaction
SQL_CHUNK = 500  # values per IN (...) list, well below SQLite's variable limit
REJECTED_KEEP = 10_000  # rejected rows kept for diagnosis (the journal keeps the events)
JITTER = 0.2

_C = Category
PRIORITY: dict[Category, int] = {_C.ALARM: 0, _C.TAMPER: 0, _C.FAULT: 1, _C.RESTORE: 2,
                                 _C.ARMING: 2, _C.BYPASS: 2, _C.SYSTEM: 3, _C.LOCAL: 4}  # fmt: skip
LOWEST_FIRST = sorted(set(PRIORITY.values()), reverse=True)

DDL = (
    "CREATE TABLE meta (one INTEGER PRIMARY KEY CHECK (one = 1), high_seq INTEGER NOT NULL,"
    " high_id TEXT NOT NULL)",
    "INSERT INTO meta VALUES (1, 0, '')",
    # Stored in send order, so due() reads the table itself in (priority, seq) order.
    """CREATE TABLE pending (transport TEXT NOT NULL, priority INTEGER NOT NULL,
        seq INTEGER NOT NULL, event_id TEXT NOT NULL, ts REAL NOT NULL,
        attempts INTEGER NOT NULL, first_sent REAL, next_try REAL NOT NULL,
        PRIMARY KEY (transport, priority, seq)) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX pending_seq ON pending(transport, seq)",
    "CREATE UNIQUE INDEX pending_id ON pending(transport, event_id)",
    "CREATE INDEX pending_next ON pending(transport, next_try)",
    """CREATE TABLE rejected (transport TEXT NOT NULL, seq INTEGER NOT NULL,
        event_id TEXT NOT NULL, priority INTEGER NOT NULL, ts REAL NOT NULL,
        attempts INTEGER NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL)""",
    "CREATE INDEX rejected_transport ON rejected(transport)",
)
_ITEM = "transport, seq, event_id, priority, attempts, first_sent, next_try"


class OutboxError(EdgeError, RuntimeError):
    """The outbox file cannot be opened or written."""


def priority_of(kind: Kind) -> int:
    """Send rank of a kind (0 first): alarms and tamper, faults, restores/arming, system."""
    return PRIORITY[kind.spec.category]


def backoff_delay(attempts: int, backoff_s: tuple[float, float], rng: random.Random) -> float:
    """Wait after the ``attempts``-th send: doubling from the minimum, jittered ±20 %.

    The cap is applied after the jitter, so a capped item still spreads over [0.8, 1] x cap
    and a backlog resent after an outage does not come back in lockstep.
    """
    low, high = backoff_s
    raw = min(high, low * 2.0 ** min(max(attempts, 1) - 1, 40))
    return min(high, raw * rng.uniform(1.0 - JITTER, 1.0 + JITTER))


def outbox_path(data_dir: str | Path) -> Path:
    """Where the outbox lives: next to the journal it is derived from."""
    return Path(data_dir) / OUTBOX_FILE


@dataclass(frozen=True)
class OutboxItem:
    transport: str
    seq: int
    event_id: str
    priority: int
    attempts: int
    first_sent: float | None
    next_try: float


def _epoch(event: Event) -> float:
    try:
        return parse_iso(event.ts).timestamp()
    except (ValueError, IndexError):
        log.warning("event %s has an unreadable ts %r; using now for its age", event.id, event.ts)
        return time.time()


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), SQL_CHUNK):
        yield values[start : start + SQL_CHUNK]


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
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._error("open", exc) from exc
        try:
            self._prepare()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("open", exc) from exc
            raise

    # -- opening ----------------------------------------------------------------------------
    def _prepare(self) -> None:
        db = self._db
        if str(db.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() != "wal":
            log.warning("outbox %s: WAL mode refused; readers may block", self.path)
        db.execute("PRAGMA synchronous=NORMAL")  # why: see the module docstring
        marks = ",".join("?" * len(self.transports))
        with self._tx():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"{self.path}: outbox schema {version} is newer than this edge version "
                    f"understands ({SCHEMA_VERSION}): upgrade edge"
                )
            if version == 0:
                for statement in DDL:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            sql = f"DELETE FROM pending WHERE transport NOT IN ({marks})"
            gone = db.execute(sql, self.transports).rowcount
            db.execute("UPDATE pending SET next_try = 0 WHERE next_try > 0")
            meta = db.execute("SELECT high_seq, high_id FROM meta").fetchone()
        self._high_seq, self._high_id = meta
        if gone:
            log.warning("outbox %s: dropped %d items of unconfigured transports", self.path, gone)
        self._depth = {t: self._count("pending", t) for t in self.transports}

    def _count(self, table: str, transport: str) -> int:
        sql = f"SELECT COUNT(*) FROM {table} WHERE transport = ?"
        return int(self._db.execute(sql, (transport,)).fetchone()[0])

    def _error(self, action: str, exc: BaseException) -> OutboxError:
        low = str(exc).lower()
        if isinstance(exc, PermissionError) or "readonly" in low or "unable to open" in low:
            fix = f"run as the edge user or fix ownership of {self.path.parent}"
        elif "full" in low:
            fix = f"free space on the disk holding {self.path.parent}"
        elif "not a database" in low or "malformed" in low:
            fix = (
                f"stop the alarm service and move the file aside (mv {self.path} "
                f"{self.path}.bad); it is rebuilt from the journal, which resends the events "
                "the journal holds (the central station ignores duplicate ids)"
            )
        else:
            fix = "only the alarm service may open the outbox; check the disk (dmesg)"
        return OutboxError(f"{self.path}: cannot {action} the outbox: {exc}: {fix}")

    @contextlib.contextmanager
    def _guarded(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise self._error(action, exc) from exc

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db)

    def _known(self, transport: str) -> None:
        if transport not in self._depth:
            raise ValueError(
                f"unknown transport {transport!r}: this outbox serves {', '.join(self.transports)}"
            )

    # -- filling ----------------------------------------------------------------------------
    def catch_up(self, journal: Journal) -> int:
        """Enqueue every transmit-kind journal event past the high-water mark, for every
        transport; returns how many events were enqueued. Costs one comparison when the
        journal has nothing new, so it may follow every append."""
        last = journal.last_seq()
        with self._guarded("fill"):
            if not self._checked or last < self._high_seq:
                if self._journal_replaced(journal, last):
                    self._forget_all()
                self._checked = True
            added = 0
            while last > self._high_seq:
                events = journal.since(self._high_seq, CATCH_UP_BATCH)
                if not events:
                    break
                added += self._enqueue(events)
            return added

    def _journal_replaced(self, journal: Journal, last: int) -> bool:
        """The high-water row is gone from where it must be: this is another journal."""
        if self._high_seq == 0:
            return False
        if last < self._high_seq:
            return True
        event = journal.get(self._high_id)
        if event is not None:
            return event.seq != self._high_seq
        first = journal.since(0, 1)  # pruned past our mark is not a replacement
        return bool(first) and first[0].seq <= self._high_seq

    def _forget_all(self) -> None:
        reason = "journal replaced: the event is no longer in the journal"
        log.error(
            "outbox %s: the journal is not the one the outbox was built from (it ends before "
            "seq %d or holds another event there); its %d pending items are rejected",
            self.path, self._high_seq, sum(self._depth.values()),
        )  # fmt: skip
        with self._tx() as db:
            for transport in self.transports:
                seqs = [r[0] for r in db.execute(
                    "SELECT seq FROM pending WHERE transport = ?", (transport,))]  # fmt: skip
                self._move_to_rejected(transport, seqs, reason)
            db.execute("UPDATE meta SET high_seq = 0, high_id = ''")
        self._high_seq, self._high_id = 0, ""
        self._depth = dict.fromkeys(self.transports, 0)

    def _enqueue(self, events: list[Event]) -> int:
        wanted = [e for e in events if e.kind.spec.transmit]
        last = events[-1]
        depth, dropped = dict(self._depth), {}
        with self._tx() as db:
            for transport in self.transports:
                rows = [(transport, priority_of(e.kind), e.seq, e.id, _epoch(e)) for e in wanted]
                cur = db.executemany(
                    "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?, 0, NULL, 0)", rows
                )
                depth[transport] += cur.rowcount
                dropped[transport] = self._enforce_bound(transport, depth[transport])
                depth[transport] -= dropped[transport]
            db.execute("UPDATE meta SET high_seq = ?, high_id = ?", (last.seq, last.id))
        self._high_seq, self._high_id, self._depth = last.seq, last.id, depth
        for transport, n in dropped.items():
            if n:
                self._overflow[transport] = self._overflow.get(transport, 0) + n
                log.warning("outbox %s full: dropped %d %s items", self.path, n, transport)
        return len(wanted)

    def _enforce_bound(self, transport: str, depth: int) -> int:
        """Drop the lowest-priority, oldest items beyond max_rows; returns how many."""
        excess, dropped = depth - self.max_rows, 0
        reason = f"outbox full (max_rows={self.max_rows}): dropped, lowest priority first"
        for priority in LOWEST_FIRST:
            if dropped >= excess:
                break
            seqs = [r[0] for r in self._db.execute(
                "SELECT seq FROM pending WHERE transport = ? AND priority = ? ORDER BY seq "
                "LIMIT ?", (transport, priority, excess - dropped))]  # fmt: skip
            dropped += self._move_to_rejected(transport, seqs, reason)
        return dropped

    def _move_to_rejected(self, transport: str, seqs: Sequence[int], reason: str) -> int:
        moved, now = 0, time.time()
        for chunk in _chunks(seqs):
            where = f"transport = ? AND seq IN ({','.join('?' * len(chunk))})"
            self._db.execute(
                "INSERT INTO rejected SELECT transport, seq, event_id, priority, ts, attempts, "
                f"?, ? FROM pending WHERE {where}", (reason, now, transport, *chunk)
            )  # fmt: skip
            cur = self._db.execute(f"DELETE FROM pending WHERE {where}", (transport, *chunk))
            moved += cur.rowcount
        self._db.execute("DELETE FROM rejected WHERE rowid <= (SELECT MAX(rowid) FROM rejected)"
                         " - ?", (REJECTED_KEEP,))  # fmt: skip
        return moved

    def overflow(self) -> dict[str, int]:
        """Items dropped per transport since the last call (the caller journals the loss)."""
        with self._lock:
            out, self._overflow = self._overflow, {}
            return out

    # -- draining ---------------------------------------------------------------------------
    def due(self, transport: str, now: float, limit: int = 100) -> list[OutboxItem]:
        """Unacked items whose retry time has come, in send order: priority, then seq."""
        self._known(transport)
        with self._guarded("read") as db:
            soonest = self._soonest(transport)
            if soonest is None or soonest > now:
                return []
            # "+next_try": keep the planner on the primary key, which is already in send
            # order, instead of the next_try index followed by a sort of the whole backlog.
            rows = db.execute(f"SELECT {_ITEM} FROM pending WHERE transport = ? AND "
                              "+next_try <= ? ORDER BY priority, seq LIMIT ?",
                              (transport, now, limit)).fetchall()  # fmt: skip
        return [OutboxItem(*row) for row in rows]

    def oldest(self, transport: str, limit: int = 100) -> list[OutboxItem]:
        """The oldest unacked items in journal order, whatever their retry time: for a
        transport that sends strictly in order on its own retry schedule (DC-09)."""
        self._known(transport)
        with self._guarded("read") as db:
            rows = db.execute(f"SELECT {_ITEM} FROM pending WHERE transport = ? ORDER BY seq "
                              "LIMIT ?", (transport, limit)).fetchall()  # fmt: skip
        return [OutboxItem(*row) for row in rows]

    def next_try(self, transport: str) -> float | None:
        """The earliest retry time of a transport (None when nothing is pending): how long
        a sender may sleep when :meth:`due` returned nothing."""
        self._known(transport)
        with self._guarded("read"):
            return self._soonest(transport)

    def _soonest(self, transport: str) -> float | None:
        sql = "SELECT MIN(next_try) FROM pending WHERE transport = ?"
        value = self._db.execute(sql, (transport,)).fetchone()[0]
        return None if value is None else float(value)

    def mark_sent(self, transport: str, seqs: Sequence[int], now: float) -> None:
        """Record one more send of each item and when to resend it if no ack comes."""
        self._known(transport)
        with self._guarded("write"), self._tx() as db:
            rows: list[tuple[int, int, float | None]] = []
            for chunk in _chunks(list(dict.fromkeys(seqs))):
                rows += db.execute(
                    "SELECT seq, attempts, first_sent FROM pending WHERE transport = ? "
                    f"AND seq IN ({','.join('?' * len(chunk))})", (transport, *chunk),
                ).fetchall()  # fmt: skip
            updates = [(n + 1, now if first is None else first,
                        now + backoff_delay(n + 1, self.backoff_s, self._rng), transport, seq)
                       for seq, n, first in rows]  # fmt: skip
            db.executemany("UPDATE pending SET attempts = ?, first_sent = ?, next_try = ? "
                           "WHERE transport = ? AND seq = ?", updates)  # fmt: skip

    def ack(self, transport: str, event_ids: Sequence[str]) -> int:
        """Forget acknowledged items; returns how many were pending (repeats are harmless)."""
        self._known(transport)
        ids = [(transport, i) for i in dict.fromkeys(event_ids)]
        if not ids:
            return 0
        with self._guarded("write"):
            with self._tx() as db:
                sql = "DELETE FROM pending WHERE transport = ? AND event_id = ?"
                done = db.executemany(sql, ids).rowcount
            self._depth[transport] -= done
        return done

    def reject(self, transport: str, seq: int, reason: str) -> None:
        """Give up on one item (e.g. a DC-09 DUH): keep it in the rejected table with why."""
        self._known(transport)
        with self._guarded("write"):
            with self._tx():
                moved = self._move_to_rejected(transport, [seq], reason)
            self._depth[transport] -= moved
        if moved:
            log.warning("outbox: %s gave up on seq %d: %s", transport, seq, reason)

    # -- reading ----------------------------------------------------------------------------
    def depth(self, transport: str) -> int:
        self._known(transport)
        with self._lock:
            return self._depth[transport]

    def oldest_unacked_age_s(self, transport: str, now_wall: float) -> float | None:
        """Age of the oldest owed event (journal order), from its journal timestamp."""
        self._known(transport)
        with self._guarded("read") as db:
            sql = "SELECT ts FROM pending WHERE transport = ? ORDER BY seq LIMIT 1"
            row = db.execute(sql, (transport,)).fetchone()
        return None if row is None else max(0.0, now_wall - row[0])

    def oldest_pending_seq(self) -> int | None:
        """Lowest journal seq still owed on any transport: the journal must keep it."""
        with self._guarded("read") as db:
            row = db.execute("SELECT MIN(seq) FROM pending").fetchone()
        return None if row is None else row[0]

    def stats(self, now_wall: float | None = None) -> dict[str, dict[str, Any]]:
        """Per transport: depth, oldest_s (age of the oldest owed event), rejected (kept)."""
        now_wall = time.time() if now_wall is None else now_wall
        out: dict[str, dict[str, Any]] = {}
        for transport in self.transports:
            oldest = self.oldest_unacked_age_s(transport, now_wall)
            with self._guarded("read"):
                rejected = self._count("rejected", transport)
            out[transport] = {"depth": self.depth(transport), "oldest_s": oldest,
                              "rejected": rejected}  # fmt: skip
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
