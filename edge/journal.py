"""The tamper-evident event journal ("main courante") of the site box.

Why SQLite in WAL mode with ``synchronous=FULL``: an alarm must survive a power cut from the
moment :meth:`Journal.append` returns, and readers in other processes (`edge events`) must never
block the single writer (the alarm service).

Why a hash chain: every row stores ``prev`` (the hash of the row before it) and ``hash`` =
SHA-256 of ``prev`` followed by the canonical JSON of its own content, so an edited, removed or
reordered row breaks the chain at that row and :meth:`Journal.verify` names it. SQL triggers
also refuse UPDATE and DELETE, so a mistake with the sqlite3 shell cannot rewrite history.

What a chain cannot prove: that the newest rows (the tail) were not removed, or that someone
with write access to the file did not rebuild the whole chain. The ``prev``/``hash`` published
to the central station with each event are the outside witness for both.

A full data disk never makes :meth:`Journal.append` fail: it releases the disk reserve
(:mod:`edge.disk`) and tries again, and when even that is not enough it chains the events in
memory (:mod:`edge.journal_tail`) and writes them, unchanged, as soon as space is back
(:meth:`Journal.flush`). Reads through this object see held events like committed ones.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge.disk import LOW_WATER_BYTES, Reserve, free_bytes, is_disk_full
from edge.errors import JournalError
from edge.events import Event
from edge.journal_chain import CONTENT, GENESIS, SEP, chain_hash
from edge.journal_file import JOURNAL_FILE, JournalFile, JournalNotReady, journal_path
from edge.journal_prune import prune_upto
from edge.journal_schema import INSERT_EVENT, SCHEMA_VERSION, iso_utc, parse_iso
from edge.journal_tail import MAX_EVENTS, HeldRow
from edge.sqlite_wal import checkpoint

__all__ = [
    "CONTENT", "GENESIS", "JOURNAL_FILE", "SCHEMA_VERSION", "Journal", "JournalNotReady",
    "chain_hash", "iso_utc", "journal_path", "parse_iso",
]  # fmt: skip

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0  # while events are held, an append tries to write them at most this often
FLUSH_BATCH = 200  # held rows written per transaction
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def _read_boot_id() -> str:
    try:
        return Path(BOOT_ID_FILE).read_text(encoding="ascii").strip()
    except OSError:  # not Linux: monotonic times then cannot be matched to a boot
        return ""


class Journal(JournalFile):
    """Append-only, hash-chained event store: one writer process, any number of readers.

    The writer keeps the last seq and hash in memory so an append costs one INSERT and one
    fsync'ed commit. Methods are serialised by a lock, so the writer may also be driven from a
    worker thread (e.g. ``asyncio.to_thread``). ``on_disk_full`` is called (outside the lock)
    each time an append starts holding events in memory.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_events: int = 10_000,
        keep_days: int = 365,
        max_events: int = 1_000_000,
        readonly: bool = False,
        on_disk_full: Callable[[], None] | None = None,
        held_max: int = MAX_EVENTS,
    ) -> None:
        if keep_events < 0 or keep_days < 0 or max_events < 1:
            raise ValueError("keep_events and keep_days must be >= 0 and max_events >= 1")
        self.keep_events, self.keep_days, self.max_events = keep_events, keep_days, max_events
        self._boot_id = _read_boot_id()
        self._reserve = Reserve(Path(path).parent)
        self.on_disk_full = on_disk_full
        self._next_flush = 0.0
        super().__init__(path, readonly=readonly, held_max=held_max)

    # -- writing ----------------------------------------------------------------------------
    def append(self, event: Event) -> Event:
        """Commit one event durably; an id already journaled returns the committed row."""
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[Event]) -> list[Event]:
        """Commit several events in one transaction (all or none).

        With the disk full they are held in memory instead (see the module docstring): the
        returned events then carry their seq and hash but are not durable yet.
        """
        newly_full = False
        with self._guarded("write"):
            if self._tail and time.monotonic() >= self._next_flush:
                self._flush_locked()
            if not self._tail:
                try:
                    return self._commit(events)
                except sqlite3.Error as exc:
                    if not is_disk_full(exc):
                        raise
                    newly_full = True
                    log.error("journal %s: data disk full: holding events in memory", self.path)
            held = self._hold(events)
        if newly_full and self.on_disk_full is not None:
            self.on_disk_full()
        return held

    def _commit(self, events: Sequence[Event]) -> list[Event]:
        """The transaction; a full disk first gets the reserve released and one more try."""
        try:
            return self._following(events)
        except sqlite3.Error as exc:
            if not is_disk_full(exc) or not self._reserve.release():
                raise
        return self._following(events)

    def _following(self, events: Sequence[Event]) -> list[Event]:
        try:
            return self._transaction(events)
        except _StaleTail as exc:  # a second writer: never fork the chain, follow its tail
            log.error("%s; retrying on the new tail", exc)
            self._last_seq, self._last_hash = self._tail_of_file()
            return self._transaction(events)

    def _transaction(self, events: Sequence[Event]) -> list[Event]:
        seq, prev = self._last_seq, self._last_hash
        out: list[Event] = []
        with self._write():
            for event in events:
                committed, inserted = self._insert(event, seq + 1, prev)
                out.append(committed)
                if inserted:
                    seq, prev = committed.seq, committed.hash
        self._last_seq, self._last_hash = seq, prev  # only once the commit succeeded
        return out

    def _chained(self, event: Event, seq: int, prev: str) -> tuple[Event, tuple[Any, ...]]:
        """The row of ``event`` at ``seq`` after ``prev``: as read back, and its INSERT values."""
        text = json.dumps(event.details, separators=SEP, default=str)
        details = json.loads(text)  # what a reader will get back, and what is hashed
        content: dict[str, Any] = {
            "seq": seq, "id": event.id, "ts": event.ts, "mono_ns": event.mono_ns,
            "boot_id": self._boot_id, "kind": event.kind.value, "sia": event.sia,
            "cid": event.cid, "qualifier": event.qualifier, "zone": event.zone_id,
            "zone_name": event.zone_name, "partition": event.partition,
            "confirmed": int(event.confirmed), "details": details,
        }  # fmt: skip
        digest = chain_hash(prev, content)
        row = [text if name == "details" else content[name] for name in CONTENT]
        chained = dataclasses.replace(event, seq=seq, prev=prev, hash=digest, details=details)
        return chained, (*row, prev, digest)

    def _insert(self, event: Event, seq: int, prev: str) -> tuple[Event, bool]:
        committed, values = self._chained(event, seq, prev)
        try:
            self._db.execute(INSERT_EVENT, values)
        except sqlite3.IntegrityError as exc:
            existing = self._get(event.id)
            if existing is not None:
                return existing, False
            if "events.seq" in str(exc):
                raise _StaleTail(
                    f"{self.path}: seq {seq} was written by another process: only the alarm "
                    "service may write the journal; stop the other writer"
                ) from exc
            raise
        return committed, True

    def _hold(self, events: Sequence[Event]) -> list[Event]:
        """Chain events in memory after the current tail (the disk is full)."""
        out: list[Event] = []
        for event in events:
            known = self._tail.get(event.id) or self._get(event.id)
            if known is not None:
                out.append(known)
            elif not self._tail.admit(event):
                lost = self._tail.lost
                if lost & (lost - 1) == 0:  # the 1st, 2nd, 4th, 8th…: a count, not a flood
                    log.error(
                        "journal %s: data disk full and %d events already held in memory: "
                        "%s dropped (%d dropped so far)", self.path, len(self._tail),
                        event.kind.value, lost,
                    )  # fmt: skip
                out.append(event)
            else:
                chained, values = self._chained(event, self._last_seq + 1, self._last_hash)
                self._tail.add(HeldRow(chained, values))
                self._last_seq, self._last_hash = chained.seq, chained.hash
                out.append(chained)
        return out

    def flush(self) -> bool:
        """Write the events held in memory, oldest first; True when none is left.

        The alarm service calls it periodically; an append also tries, at most every
        FLUSH_EVERY_S. Once all are written, a journal opened exclusive reopens shared.
        """
        with self._guarded("write"):
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        self._next_flush = time.monotonic() + FLUSH_EVERY_S
        if self.readonly:
            return True
        while self._tail:
            rows = self._tail.head(FLUSH_BATCH)
            try:
                with self._write() as db:
                    db.executemany(INSERT_EVENT, [row.values for row in rows])
            except sqlite3.Error as exc:
                if is_disk_full(exc):
                    return False
                raise
            self._tail.drop_head(len(rows))
            log.info("journal %s: wrote %d events held in memory", self.path, len(rows))
        if self.exclusive and free_bytes(self.path.parent) >= LOW_WATER_BYTES:
            self._db.close()
            self._db = self._connect()  # shared again, or exclusive if space went again
            if not self.exclusive:
                log.info("journal %s: open to readers again", self.path)
        return True

    def checkpoint(self) -> bool:
        """Empty the write-ahead log into the database (see :func:`edge.sqlite_wal.checkpoint`)."""
        if self.readonly:
            return False
        with self._guarded("checkpoint"):
            return checkpoint(self._db)

    def prune(self, now: dt.datetime | None = None, floor_seq: int | None = None) -> int:
        """Delete the oldest rows the retention rules allow; the anchor keeps verify() whole.

        A row goes if it is older than ``keep_days`` and not among the newest ``keep_events``,
        or if the journal holds more than ``max_events``. Only a prefix is ever removed (a row
        that must stay protects all rows after it), so the chain stays contiguous.
        ``floor_seq`` (the oldest event still owed to the central station) and every later
        row survive the age rule; only the ``max_events`` disk bound may take them.
        Nothing is pruned while events are held in memory or when the disk is full.
        """
        now = now or dt.datetime.now(dt.timezone.utc)
        cutoff = iso_utc(now - dt.timedelta(days=self.keep_days))
        deleted, upto = 0, None
        with self._guarded("prune"):
            if self._tail:
                return 0
            try:
                deleted, upto = self._prune(cutoff, floor_seq)
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise
                log.warning("journal %s: not pruned: the data disk is full", self.path)
        if deleted:
            log.info("journal %s: pruned %d events up to seq %s", self.path, deleted, upto)
        return deleted

    def _prune(self, cutoff: str, floor_seq: int | None) -> tuple[int, int | None]:
        with self._write() as db:
            upto = prune_upto(
                db, cutoff=cutoff, keep_events=self.keep_events, max_events=self.max_events,
                last_seq=self._last_seq, floor_seq=floor_seq,
            )  # fmt: skip
            if upto is None:
                return 0, None
            digest = db.execute("SELECT hash FROM events WHERE seq = ?", (upto,)).fetchone()[0]
            db.execute("INSERT INTO pruning VALUES (1)")
            deleted = db.execute("DELETE FROM events WHERE seq <= ?", (upto,)).rowcount
            db.execute("DELETE FROM anchor")
            db.execute("INSERT INTO anchor VALUES (1, ?, ?)", (upto, digest))
            db.execute("DELETE FROM pruning")
        return deleted, upto

    # -- the disk ----------------------------------------------------------------------------
    def held(self) -> int:
        """Events chained in memory, waiting for disk space (0 normally)."""
        with self._lock:
            return len(self._tail)

    def lost(self) -> int:
        """Events refused since start because the disk was full and memory at its bound."""
        with self._lock:
            return self._tail.lost

    def held_peak(self, reset: bool = False) -> int:
        """Most events held at once since the last reset (``reset`` starts a new count)."""
        with self._lock:
            return self._tail.reset_peak() if reset else self._tail.peak

    def durable_seq(self) -> int:
        """Seq of the newest row on disk: the outbox never records progress beyond it."""
        with self._lock:
            return self._tail.rows[0].event.seq - 1 if self._tail else self._last_seq

    # -- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _StaleTail(JournalError):
    """The seq we meant to use is taken: our in-memory tail is stale."""
