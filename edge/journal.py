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
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import JournalError
from edge.events import Event
from edge.journal_chain import CONTENT, GENESIS, SEP, VerifyReport, chain_hash, check_row
from edge.journal_schema import (
    DDL,
    INSERT_EVENT,
    SCHEMA_VERSION,
    SELECT_EVENTS,
    iso_utc,
    parse_iso,
    row_to_event,
)
from edge.sqlite_tx import immediate

if TYPE_CHECKING:
    from edge.config.site import SiteConfig

log = logging.getLogger(__name__)

WRITER_CACHE_KB = 256

JOURNAL_FILE = "journal.db"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


class JournalNotReady(JournalError):
    """The journal file does not exist yet or its schema is not written yet (readers wait)."""


def journal_path(cfg: SiteConfig) -> Path:
    """Where the journal of a site lives; the alarm service and `edge events` must agree."""
    return Path(cfg.paths.data_dir) / JOURNAL_FILE


def _read_boot_id() -> str:
    try:
        return Path(BOOT_ID_FILE).read_text(encoding="ascii").strip()
    except OSError:  # not Linux: monotonic times then cannot be matched to a boot
        return ""


def _error(path: Path, action: str, exc: BaseException) -> JournalError:
    """Turn a sqlite/OS error into a message that names the file and the fix."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, PermissionError) or "unable to open" in low or "readonly" in low:
        fix = (
            f"run as the edge user or fix ownership of {path.parent} "
            f"(chown -R edge:edge {path.parent})"
        )
    elif "full" in low:
        fix = f"free space on the disk holding {path.parent}"
    elif "not a database" in low or "malformed" in low:
        fix = (
            f"the file is damaged: stop the alarm service, move it aside "
            f"(mv {path} {path}.bad) and keep the copy for investigation"
        )
    elif "locked" in low or "busy" in low:
        fix = "another process holds the journal: only the alarm service may write it"
    else:
        fix = "check the disk (dmesg) and the file, then restart the alarm service"
    return JournalError(f"{path}: cannot {action} the event journal: {text}: {fix}")


class Journal:
    """Append-only, hash-chained event store: one writer process, any number of readers.

    The writer keeps the last seq and hash in memory so an append costs one INSERT and one
    fsync'ed commit. Methods are serialised by a lock, so the writer may also be driven from a
    worker thread (e.g. ``asyncio.to_thread``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_events: int = 10_000,
        keep_days: int = 365,
        max_events: int = 1_000_000,
        readonly: bool = False,
    ) -> None:
        if keep_events < 0 or keep_days < 0 or max_events < 1:
            raise ValueError("keep_events and keep_days must be >= 0 and max_events >= 1")
        self.path = Path(path)
        self.readonly = readonly
        self.keep_events, self.keep_days, self.max_events = keep_events, keep_days, max_events
        self._lock = threading.Lock()
        self._boot_id = _read_boot_id()
        if readonly and not self.path.exists():
            raise JournalNotReady(
                f"no journal yet at {self.path} (the alarm service creates it on first start)"
            )
        if not readonly:
            try:
                self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            except OSError as exc:
                raise _error(self.path, "create the directory of", exc) from exc
        self._db = self._connect()
        try:
            self._prepare()
            self._last_seq, self._last_hash = self._tail()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error | OSError):
                raise _error(self.path, "open", exc) from exc
            raise

    # -- opening ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        ro = self.readonly
        target = f"{self.path.resolve().as_uri()}?mode=ro" if ro else str(self.path)
        try:
            # A reader waits briefly (it polls again anyway), so Ctrl-C on `--follow` is prompt.
            db = sqlite3.connect(
                target,
                uri=ro,
                timeout=0.5 if ro else 5.0,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise _error(self.path, "open", exc) from exc
        db.row_factory = sqlite3.Row
        return db

    def _prepare(self) -> None:
        """Readers check the schema version; the writer sets WAL + FULL and migrates."""
        db = self._db
        if self.readonly:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise JournalNotReady(f"{self.path}: the journal is being created; try again")
            self._check_version(version)
            return
        created = db.execute("PRAGMA user_version").fetchone()[0] == 0
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("journal %s: WAL mode refused (%s); readers may block", self.path, mode)
        db.execute("PRAGMA synchronous=FULL")
        # The writer reads only the chain's tail and recent rows: a small page cache keeps the
        # alarm service's memory flat as the journal grows (SQLite's default is 2 MB).
        db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KB}")
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if version == 0:  # later schema versions add their migration steps here
                for statement in DDL:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if created:
            os.chmod(self.path, 0o640)
            log.info("journal %s created (schema %d)", self.path, SCHEMA_VERSION)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path}: journal schema {version} is newer than this edge version "
                f"understands ({SCHEMA_VERSION}): upgrade edge"
            )

    def _tail(self) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else self._anchor()

    def _anchor(self) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, hash FROM anchor").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    @contextlib.contextmanager
    def _guarded(self, action: str) -> Iterator[None]:
        """Serialise callers and turn sqlite errors into a JournalError naming file and fix."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise _error(self.path, action, exc) from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise JournalError(f"{self.path}: opened read-only; only the alarm service writes it")
        with immediate(self._db) as db:
            yield db

    # -- writing ----------------------------------------------------------------------------
    def append(self, event: Event) -> Event:
        """Commit one event durably; an id already journaled returns the committed row."""
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[Event]) -> list[Event]:
        """Commit several events in one transaction (all or none)."""
        with self._guarded("write"):
            try:
                return self._transaction(events)
            except _StaleTail as exc:  # a second writer: never fork the chain, follow its tail
                log.error("%s; retrying on the new tail", exc)
                self._last_seq, self._last_hash = self._tail()
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

    def _insert(self, event: Event, seq: int, prev: str) -> tuple[Event, bool]:
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
        try:
            self._db.execute(INSERT_EVENT, (*row, prev, digest))
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
        return dataclasses.replace(event, seq=seq, prev=prev, hash=digest, details=details), True

    def prune(self, now: dt.datetime | None = None, floor_seq: int | None = None) -> int:
        """Delete the oldest rows the retention rules allow; the anchor keeps verify() whole.

        A row goes if it is older than ``keep_days`` and not among the newest ``keep_events``,
        or if the journal holds more than ``max_events``. Only a prefix is ever removed (a row
        that must stay protects all rows after it), so the chain stays contiguous.
        ``floor_seq`` (the oldest event still owed to the central station) and every later
        row survive the age rule; only the ``max_events`` disk bound may take them.
        """
        now = now or dt.datetime.now(dt.timezone.utc)
        cutoff = iso_utc(now - dt.timedelta(days=self.keep_days))
        deleted = 0
        with self._guarded("prune"), self._write() as db:
            upto = self._prune_upto(cutoff, floor_seq)
            if upto is not None:
                digest = db.execute("SELECT hash FROM events WHERE seq = ?", (upto,)).fetchone()[0]
                db.execute("INSERT INTO pruning VALUES (1)")
                deleted = db.execute("DELETE FROM events WHERE seq <= ?", (upto,)).rowcount
                db.execute("DELETE FROM anchor")
                db.execute("INSERT INTO anchor VALUES (1, ?, ?)", (upto, digest))
                db.execute("DELETE FROM pruning")
        if deleted:
            log.info("journal %s: pruned %d events up to seq %s", self.path, deleted, upto)
        return deleted

    def _prune_upto(self, cutoff: str, floor_seq: int | None = None) -> int | None:
        """Highest seq that may go (it and every row before it), or None."""
        q = self._db.execute
        newest_sql = "SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?"
        by_age = None
        if self.keep_events == 0:
            protect: int | None = self._last_seq + 1
        else:
            row = q(newest_sql, (self.keep_events - 1,)).fetchone()
            protect = row[0] if row else None  # fewer rows than keep_events: keep all
        if protect is not None:
            stop = q("SELECT seq FROM events WHERE ts >= ? OR seq >= ? ORDER BY seq LIMIT 1",
                     (cutoff, protect)).fetchone()  # fmt: skip
            by_age = q("SELECT MAX(seq) FROM events WHERE seq < ?",
                       (stop[0] if stop else protect,)).fetchone()[0]  # fmt: skip
        if by_age is not None and floor_seq is not None:
            by_age = min(by_age, floor_seq - 1)
        row = q(newest_sql, (self.max_events,)).fetchone()
        candidates = [s for s in (by_age, row[0] if row else None) if s is not None]
        return max(candidates) if candidates else None

    # -- reading ----------------------------------------------------------------------------
    def last_seq(self) -> int:
        """Seq of the newest committed row (0 when empty); readers see the writer's progress."""
        if not self.readonly:
            return self._last_seq
        with self._guarded("read"):
            return self._tail()[0]

    def since(self, seq: int, limit: int = 1000) -> list[Event]:
        """Rows after ``seq`` in order: the cursor API of the publisher and `--follow`."""
        return self._select(" WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))

    def query(
        self, *, since_ts: str | None = None, zone: str | None = None, limit: int = 200
    ) -> list[Event]:
        """The newest ``limit`` rows matching, oldest first (how an operator reads a log).

        ``since_ts`` is ISO 8601; a time without offset is UTC, like the stored timestamps.
        """
        clauses, params = [], []
        if since_ts:
            clauses.append("ts >= ?")
            params.append(iso_utc(parse_iso(since_ts)))
        if zone:
            clauses.append("zone = ?")
            params.append(zone)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._select(f"{where} ORDER BY seq DESC LIMIT ?", (*params, limit))[::-1]

    def by_seqs(self, seqs: Sequence[int]) -> list[Event]:
        """Rows with these sequence numbers, in the order given (missing ones skipped)."""
        if not seqs:
            return []
        marks = ",".join("?" * len(seqs))
        rows = {e.seq: e for e in self._select(f" WHERE seq IN ({marks})", tuple(seqs))}
        return [rows[s] for s in seqs if s in rows]

    def get(self, event_id: str) -> Event | None:
        with self._guarded("read"):
            return self._get(event_id)

    def _get(self, event_id: str) -> Event | None:
        row = self._db.execute(f"{SELECT_EVENTS} WHERE id = ?", (event_id,)).fetchone()
        return row_to_event(row) if row else None

    def _select(self, tail: str, params: Sequence[Any]) -> list[Event]:
        with self._guarded("read"):
            rows = self._db.execute(SELECT_EVENTS + tail, params).fetchall()
        return [row_to_event(r) for r in rows]

    def verify(self) -> VerifyReport:
        """Recompute the chain from the prune anchor (or genesis) and stop at the first bad row.

        Detects an edited row, rows deleted in the middle or at the head (seq gap), and
        reordered or inserted rows (prev mismatch). A deleted tail cannot be detected by a
        chain: compare ``last_seq`` with the seq the central station last acknowledged.
        """
        with self._lock:
            try:
                return self._verify()
            except sqlite3.Error as exc:
                return VerifyReport(False, 0, None, f"the database cannot be read: {exc}")

    def _verify(self) -> VerifyReport:
        seq, prev = self._anchor()
        origin = f"the prune anchor at seq {seq}" if seq else "the first event"
        checked = 0
        for row in self._db.execute(f"{SELECT_EVENTS} ORDER BY seq"):
            problem = check_row(row, seq, prev)
            if problem:
                return VerifyReport(False, checked, row["seq"], f"seq {row['seq']}: {problem}")
            checked += 1
            seq, prev = row["seq"], row["hash"]
        return VerifyReport(True, checked, None, f"chain intact from {origin}")

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _StaleTail(JournalError):
    """The seq we meant to use is taken: our in-memory tail is stale."""
