"""The journal file: opening it (as the one writer or as a reader), its schema, and reading.

:class:`edge.journal.Journal` adds the writing side. Reading is shared because the writer
also serves reads (the publisher's cursor, the outbox, live-view checks), and its reads must
include the events it holds in memory while the disk is full (:mod:`edge.journal_tail`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.disk import is_disk_full
from edge.errors import JournalError
from edge.events import Event
from edge.journal_chain import GENESIS, VerifyReport, check_row
from edge.journal_schema import DDL, SCHEMA_VERSION, SELECT_EVENTS, iso_utc, parse_iso, row_to_event
from edge.journal_tail import MAX_EVENTS, MemoryTail
from edge.sqlite_tx import immediate
from edge.sqlite_wal import open_wal

if TYPE_CHECKING:
    from edge.config.site import SiteConfig

log = logging.getLogger(__name__)

WRITER_CACHE_KB = 256
JOURNAL_FILE = "journal.db"


class JournalNotReady(JournalError):
    """The journal file does not exist yet or its schema is not written yet (readers wait)."""


def journal_path(cfg: SiteConfig) -> Path:
    """Where the journal of a site lives; the alarm service and `edge events` must agree."""
    return Path(cfg.paths.data_dir) / JOURNAL_FILE


def journal_error(path: Path, action: str, exc: BaseException) -> JournalError:
    """Turn a sqlite/OS error into a message that names the file and the fix."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, PermissionError) or "unable to open" in low or "readonly" in low:
        fix = (
            f"run as the edge user or fix ownership of {path.parent} "
            f"(chown -R edge:edge {path.parent})"
        )
    elif is_disk_full(exc):
        fix = f"free space on the disk holding {path.parent}"
    elif "not a database" in low or "malformed" in low:
        fix = (
            f"the file is damaged: stop the alarm service, move it aside "
            f"(mv {path} {path}.bad) and keep the copy for investigation"
        )
    elif "locked" in low or "busy" in low:
        fix = (
            "another process holds the journal: only the alarm service may write it (with a "
            "full data disk it keeps the file to itself until space is back: free space)"
        )
    else:
        fix = "check the disk (dmesg) and the file, then restart the alarm service"
    return JournalError(f"{path}: cannot {action} the event journal: {text}: {fix}")


class JournalFile:
    """An open journal and its read API; one writer process, any number of readers."""

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool, held_max: int = MAX_EVENTS
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.exclusive = False  # opened without -shm because the disk was full (see sqlite_wal)
        self._lock = threading.Lock()
        self._tail = MemoryTail(held_max)
        if readonly and not self.path.exists():
            raise JournalNotReady(
                f"no journal yet at {self.path} (the alarm service creates it on first start)"
            )
        if not readonly:
            try:
                self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            except OSError as exc:
                raise journal_error(self.path, "create the directory of", exc) from exc
        self._db = self._connect()
        try:
            self._prepare()
            self._last_seq, self._last_hash = self._tail_of_file()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error | OSError):
                raise journal_error(self.path, "open", exc) from exc
            raise

    # -- opening ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                # A reader waits briefly (it polls again anyway): Ctrl-C on `--follow` is prompt.
                target = f"{self.path.resolve().as_uri()}?mode=ro"
                db = sqlite3.connect(
                    target, uri=True, timeout=0.5, isolation_level=None, check_same_thread=False
                )
            else:
                db, self.exclusive = open_wal(self.path, timeout=5.0, synchronous="FULL")
                # The writer reads only the chain's tail and recent rows: a small page cache
                # keeps the alarm service's memory flat as the journal grows (default 2 MB).
                db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KB}")
        except sqlite3.Error as exc:
            raise journal_error(self.path, "open", exc) from exc
        db.row_factory = sqlite3.Row
        return db

    def _prepare(self) -> None:
        """Readers check the schema version; the writer migrates."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if self.readonly:
            if version == 0:
                raise JournalNotReady(f"{self.path}: the journal is being created; try again")
            self._check_version(version)
            return
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if version == 0:  # later schema versions add their migration steps here
                for statement in DDL:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if version == 0:
            os.chmod(self.path, 0o640)
            log.info("journal %s created (schema %d)", self.path, SCHEMA_VERSION)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path}: journal schema {version} is newer than this edge version "
                f"understands ({SCHEMA_VERSION}): upgrade edge"
            )

    def _tail_of_file(self) -> tuple[int, str]:
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
                raise journal_error(self.path, action, exc) from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise JournalError(f"{self.path}: opened read-only; only the alarm service writes it")
        with immediate(self._db) as db:
            yield db

    # -- reading ----------------------------------------------------------------------------
    def last_seq(self) -> int:
        """Seq of the newest row (0 when empty), held ones included for the writer; readers
        see the writer's committed progress."""
        if not self.readonly:
            return self._last_seq
        with self._guarded("read"):
            return self._tail_of_file()[0]

    def since(self, seq: int, limit: int = 1000) -> list[Event]:
        """Rows after ``seq`` in order: the cursor API of the publisher and `--follow`."""
        with self._guarded("read"):
            rows = self._rows(" WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
            return rows + self._tail.since(seq, limit - len(rows))

    def query(
        self, *, since_ts: str | None = None, zone: str | None = None, limit: int = 200
    ) -> list[Event]:
        """The newest ``limit`` rows matching, oldest first (how an operator reads a log).

        ``since_ts`` is ISO 8601; a time without offset is UTC, like the stored timestamps.
        """
        clauses, params = [], []
        since = iso_utc(parse_iso(since_ts)) if since_ts else None
        if since:
            clauses.append("ts >= ?")
            params.append(since)
        if zone:
            clauses.append("zone = ?")
            params.append(zone)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._guarded("read"):
            held = self._tail.matching(since, zone or None)[-limit:] if limit > 0 else []
            rest = limit - len(held)
            rows = self._rows(f"{where} ORDER BY seq DESC LIMIT ?", (*params, rest)) if rest else []
        return rows[::-1] + held

    def by_seqs(self, seqs: Sequence[int]) -> list[Event]:
        """Rows with these sequence numbers, in the order given (missing ones skipped)."""
        if not seqs:
            return []
        marks = ",".join("?" * len(seqs))
        with self._guarded("read"):
            found = {e.seq: e for e in self._rows(f" WHERE seq IN ({marks})", tuple(seqs))}
            found.update(self._tail.by_seqs(seqs))
        return [found[s] for s in seqs if s in found]

    def get(self, event_id: str) -> Event | None:
        with self._guarded("read"):
            return self._tail.get(event_id) or self._get(event_id)

    def _get(self, event_id: str) -> Event | None:
        row = self._db.execute(f"{SELECT_EVENTS} WHERE id = ?", (event_id,)).fetchone()
        return row_to_event(row) if row else None

    def _rows(self, tail: str, params: Sequence[Any]) -> list[Event]:
        """Rows on disk; the caller holds the lock."""
        return [row_to_event(r) for r in self._db.execute(SELECT_EVENTS + tail, params)]

    def verify(self) -> VerifyReport:
        """Recompute the chain from the prune anchor (or genesis) and stop at the first bad row.

        Detects an edited row, rows deleted in the middle or at the head (seq gap), and
        reordered or inserted rows (prev mismatch). A deleted tail cannot be detected by a
        chain: compare ``last_seq`` with the seq the central station last acknowledged.
        Only rows on disk are checked (events held in memory are not in the file yet).
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
            if self._tail:
                log.error(
                    "journal %s: closing with %d events still held in memory (disk full): "
                    "they are lost", self.path, len(self._tail),
                )  # fmt: skip
            self._db.close()
