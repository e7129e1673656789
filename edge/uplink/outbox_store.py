"""The outbox file: one SQLite database (WAL, ``synchronous=NORMAL``; why: see
:mod:`edge.uplink.outbox`). Every write is one transaction that raises ``sqlite3.Error`` as
is, so the facade can keep the same change in memory when the disk is full. No locking here:
the facade serialises callers."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from edge.sqlite_tx import immediate
from edge.sqlite_wal import checkpoint, open_wal
from edge.uplink.outbox_schema import (
    DDL,
    ITEM_COLUMNS,
    LOWEST_FIRST,
    REJECTED_KEEP,
    SCHEMA_VERSION,
    OutboxError,
    OutboxItem,
    Row,
    chunks,
)

log = logging.getLogger(__name__)

INSERT_PENDING = "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
UPDATE_SENT = (
    "UPDATE pending SET attempts = ?, first_sent = ?, next_try = ? WHERE transport = ? AND seq = ?"
)
# A rejected row as inserted: transport, seq, event_id, priority, ts, attempts, reason, at.
RejectedRow = tuple[str, int, str, int, float, int, str, float]


class OutboxStore:
    """Pending sends per transport on disk, the catch-up mark, and what was given up."""

    def __init__(self, path: Path, transports: tuple[str, ...], max_rows: int) -> None:
        self.path, self.transports, self.max_rows = path, transports, max_rows
        self.exclusive = False
        self.high: tuple[int, str] = (0, "")  # last journal (seq, id) enqueued
        self.depth: dict[str, int] = {}
        self.db = self._open()
        try:
            self._prepare()
        except BaseException:
            self.db.close()
            raise

    def _open(self) -> sqlite3.Connection:
        db, self.exclusive = open_wal(self.path, timeout=5.0, synchronous="NORMAL")
        return db

    def _prepare(self) -> None:
        db = self.db
        marks = ",".join("?" * len(self.transports))
        with immediate(db):
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
            # Retry times of a previous process mean nothing on this one's clock: due at once.
            db.execute("UPDATE pending SET next_try = 0 WHERE next_try > 0")
            meta = db.execute("SELECT high_seq, high_id FROM meta").fetchone()
        self.high = (meta[0], meta[1])
        if gone:
            log.warning("outbox %s: dropped %d items of unconfigured transports", self.path, gone)
        self.recount()

    def reopen(self) -> None:
        """Close and open again: leaves the exclusive mode of a full disk once space is back."""
        self.db.close()
        self.db = self._open()

    def recount(self) -> None:
        self.depth = {t: self.count("pending", t) for t in self.transports}

    def count(self, table: str, transport: str) -> int:
        sql = f"SELECT COUNT(*) FROM {table} WHERE transport = ?"
        return int(self.db.execute(sql, (transport,)).fetchone()[0])

    def checkpoint(self) -> bool:
        return checkpoint(self.db)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    # -- writes: one transaction each ------------------------------------------------------
    def enqueue(self, rows: dict[str, list[Row]], high: tuple[int, str]) -> dict[str, int]:
        """Insert new items, enforce the bound, move the mark; returns drops per transport."""
        depth, dropped = dict(self.depth), {}
        with immediate(self.db) as db:
            for transport, items in rows.items():
                depth[transport] += db.executemany(INSERT_PENDING, items).rowcount
                dropped[transport] = self._enforce_bound(transport, depth[transport])
                depth[transport] -= dropped[transport]
            db.execute("UPDATE meta SET high_seq = ?, high_id = ?", high)
        self.high, self.depth = high, depth
        return dropped

    def forget_all(self, reason: str) -> None:
        with immediate(self.db) as db:
            for transport in self.transports:
                seqs = [r[0] for r in db.execute(
                    "SELECT seq FROM pending WHERE transport = ?", (transport,))]  # fmt: skip
                self._move_to_rejected(transport, seqs, reason)
            db.execute("UPDATE meta SET high_seq = 0, high_id = ''")
        self.high, self.depth = (0, ""), dict.fromkeys(self.transports, 0)

    def mark_sent(
        self, transport: str, seqs: Sequence[int], now: float, delay: Callable[[int], float]
    ) -> None:
        with immediate(self.db) as db:
            state = self.sent_state(transport, seqs)
            updates = [(n + 1, now if first is None else first, now + delay(n + 1), transport, seq)
                       for seq, (n, first) in state.items()]  # fmt: skip
            db.executemany(UPDATE_SENT, updates)

    def ack(self, transport: str, event_ids: Sequence[str]) -> int:
        with immediate(self.db) as db:
            sql = "DELETE FROM pending WHERE transport = ? AND event_id = ?"
            done = db.executemany(sql, [(transport, i) for i in event_ids]).rowcount
        self.depth[transport] -= done
        return done

    def reject(self, transport: str, seqs: Sequence[int], reason: str) -> int:
        with immediate(self.db):
            moved = self._move_to_rejected(transport, seqs, reason)
        self.depth[transport] -= moved
        return moved

    def apply(
        self,
        added: Iterable[Row],
        sent: Iterable[tuple[int, float | None, float, str, int]],
        removed: dict[str, dict[int, str | None]],
        rejected: Iterable[RejectedRow],
        high: tuple[int, str] | None,
    ) -> dict[str, int]:
        """Write what a full disk kept in memory (see :mod:`edge.uplink.outbox_memory`) in
        one transaction; returns drops per transport beyond ``max_rows``."""
        dropped: dict[str, int] = {}
        with immediate(self.db) as db:
            db.executemany(INSERT_PENDING, added)
            db.executemany(UPDATE_SENT, sent)
            for transport, gone in removed.items():
                acked = [seq for seq, reason in gone.items() if reason is None]
                self._delete(transport, acked)
                for reason in {r for r in gone.values() if r is not None}:
                    seqs = [seq for seq, r in gone.items() if r == reason]
                    self._move_to_rejected(transport, seqs, reason)
            db.executemany("INSERT INTO rejected VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rejected)
            for transport in self.transports:
                dropped[transport] = self._enforce_bound(
                    transport, self.count("pending", transport)
                )
            if high is not None:
                db.execute("UPDATE meta SET high_seq = ?, high_id = ?", high)
        if high is not None:
            self.high = high
        self.recount()
        return dropped

    def _enforce_bound(self, transport: str, depth: int) -> int:
        """Drop the lowest-priority, oldest items beyond max_rows; returns how many."""
        excess, dropped = depth - self.max_rows, 0
        reason = f"outbox full (max_rows={self.max_rows}): dropped, lowest priority first"
        for priority in LOWEST_FIRST:
            if dropped >= excess:
                break
            seqs = [r[0] for r in self.db.execute(
                "SELECT seq FROM pending WHERE transport = ? AND priority = ? ORDER BY seq "
                "LIMIT ?", (transport, priority, excess - dropped))]  # fmt: skip
            dropped += self._move_to_rejected(transport, seqs, reason)
        return dropped

    def _move_to_rejected(self, transport: str, seqs: Sequence[int], reason: str) -> int:
        moved, now = 0, time.time()
        for chunk in chunks(seqs):
            where = f"transport = ? AND seq IN ({','.join('?' * len(chunk))})"
            self.db.execute(
                "INSERT INTO rejected SELECT transport, seq, event_id, priority, ts, attempts, "
                f"?, ? FROM pending WHERE {where}", (reason, now, transport, *chunk)
            )  # fmt: skip
            cur = self.db.execute(f"DELETE FROM pending WHERE {where}", (transport, *chunk))
            moved += cur.rowcount
        self.db.execute("DELETE FROM rejected WHERE rowid <= (SELECT MAX(rowid) FROM rejected)"
                        " - ?", (REJECTED_KEEP,))  # fmt: skip
        return moved

    def _delete(self, transport: str, seqs: Sequence[int]) -> None:
        for chunk in chunks(seqs):
            where = f"transport = ? AND seq IN ({','.join('?' * len(chunk))})"
            self.db.execute(f"DELETE FROM pending WHERE {where}", (transport, *chunk))

    # -- reads (they work on a full disk) ----------------------------------------------------
    def due(self, transport: str, now: float, limit: int) -> list[OutboxItem]:
        """Items whose retry time has come, in send order: priority, then seq."""
        soonest = self.soonest(transport)
        if soonest is None or soonest > now:
            return []
        # "+next_try": keep the planner on the primary key, which is already in send
        # order, instead of the next_try index followed by a sort of the whole backlog.
        rows = self.db.execute(f"SELECT {ITEM_COLUMNS} FROM pending WHERE transport = ? AND "
                               "+next_try <= ? ORDER BY priority, seq LIMIT ?",
                               (transport, now, limit)).fetchall()  # fmt: skip
        return [OutboxItem(*row) for row in rows]

    def in_order(self, transport: str, limit: int, after: int = 0) -> list[OutboxItem]:
        """The first ``limit`` items past seq ``after`` in journal order, whatever their retry
        time."""
        rows = self.db.execute(f"SELECT {ITEM_COLUMNS} FROM pending WHERE transport = ? "
                               "AND seq > ? ORDER BY seq LIMIT ?",
                               (transport, after, limit)).fetchall()  # fmt: skip
        return [OutboxItem(*row) for row in rows]

    def soonest(self, transport: str) -> float | None:
        sql = "SELECT MIN(next_try) FROM pending WHERE transport = ?"
        value = self.db.execute(sql, (transport,)).fetchone()[0]
        return None if value is None else float(value)

    def first(self, transport: str, order: str, n: int) -> list[tuple[int, float, float]]:
        """(seq, next_try, ts) of the first ``n`` items by ``order`` ("next_try" or "seq")."""
        assert order in ("next_try", "seq")
        sql = f"SELECT seq, next_try, ts FROM pending WHERE transport = ? ORDER BY {order} LIMIT ?"
        return [(r[0], float(r[1]), float(r[2])) for r in self.db.execute(sql, (transport, n))]

    def sent_state(
        self, transport: str, seqs: Sequence[int]
    ) -> dict[int, tuple[int, float | None]]:
        """seq -> (attempts, first_sent) of the items still pending."""
        out: dict[int, tuple[int, float | None]] = {}
        for chunk in chunks(list(dict.fromkeys(seqs))):
            out.update((seq, (n, first)) for seq, n, first in self.db.execute(
                "SELECT seq, attempts, first_sent FROM pending WHERE transport = ? "
                f"AND seq IN ({','.join('?' * len(chunk))})", (transport, *chunk)))  # fmt: skip
        return out

    def seq_of(self, transport: str, event_id: str) -> int | None:
        sql = "SELECT seq FROM pending WHERE transport = ? AND event_id = ?"
        row = self.db.execute(sql, (transport, event_id)).fetchone()
        return None if row is None else int(row[0])

    def item(self, transport: str, seq: int) -> OutboxItem | None:
        sql = f"SELECT {ITEM_COLUMNS} FROM pending WHERE transport = ? AND seq = ?"
        row = self.db.execute(sql, (transport, seq)).fetchone()
        return None if row is None else OutboxItem(*row)

    def ts_of(self, transport: str, seq: int) -> float:
        sql = "SELECT ts FROM pending WHERE transport = ? AND seq = ?"
        return float(self.db.execute(sql, (transport, seq)).fetchone()[0])
