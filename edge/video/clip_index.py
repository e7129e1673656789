"""The index of saved clips and their retention: an age limit and a disk quota.

Why an index (SQLite, WAL, ``synchronous=FULL``, like the journal): `edge clips`, the
transmission path and the retention sweep need to find a clip by its id or by any event it
serves, know whether the central station already has it, and add up disk use without walking
the directory. WAL lets the CLI read while edge-video writes.

Retention follows the law on video surveillance: images are kept at most ``retention_days``
(never more than 31) counted from the start of the clip. The quota bounds disk use: when it is
exceeded, clips already delivered to the central station go first (oldest first), and clips it
does not have yet go last. Every deletion is reported to ``on_deleted(record, reason)`` so
that the service journals it (``CLIP_DELETED``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config.video import RETENTION_MAX_DAYS
from edge.errors import EdgeError
from edge.journal_schema import iso_utc
from edge.video.clips import ClipInfo, sha256_file

if TYPE_CHECKING:
    from edge.config.site import SiteConfig

log = logging.getLogger(__name__)

CLIPS_DIR = "clips"
INDEX_FILE = "index.db"
SCHEMA_VERSION = 1
TEMP_MAX_AGE_S = 3600.0  # a half-written clip older than this was cut by a crash
DDL = (
    """CREATE TABLE clips (
        id TEXT PRIMARY KEY, camera TEXT NOT NULL, start_ts TEXT NOT NULL,
        end_ts TEXT NOT NULL, duration_s REAL NOT NULL, path TEXT NOT NULL, snapshot TEXT,
        bytes INTEGER NOT NULL, snapshot_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
        snapshot_sha256 TEXT, delivered INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL)""",
    "CREATE INDEX clips_start ON clips (start_ts)",
    """CREATE TABLE clip_events (
        clip_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (clip_id, event_id))""",
    "CREATE INDEX clip_events_event ON clip_events (event_id)",
)
COLUMNS = (
    "id, camera, start_ts, end_ts, duration_s, path, snapshot, bytes, snapshot_bytes, sha256, "
    "snapshot_sha256, delivered, created_at"
)
RETENTION, QUOTA = "retention", "quota"


class ClipIndexError(EdgeError, RuntimeError):
    """The clip index cannot be opened, read or written; the message names the file."""


def clips_dir(cfg: SiteConfig) -> Path:
    """Where clips, snapshots and the index live; edge-video and `edge clips` must agree."""
    return Path(cfg.paths.data_dir) / CLIPS_DIR


def index_path(cfg: SiteConfig) -> Path:
    return clips_dir(cfg) / INDEX_FILE


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class ClipRecord:
    """One clip as indexed: UTC times, absolute paths, what the quota counts."""

    id: str
    camera: str
    event_ids: tuple[str, ...]
    start_ts: str
    end_ts: str
    duration_s: float
    path: Path
    snapshot: Path | None
    bytes: int
    snapshot_bytes: int
    sha256: str
    snapshot_sha256: str | None
    delivered: bool
    created_at: str

    @property
    def disk_bytes(self) -> int:
        return self.bytes + self.snapshot_bytes

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(
            event_ids=list(self.event_ids),
            path=str(self.path),
            snapshot=str(self.snapshot) if self.snapshot else None,
        )
        return data


DeletedCallback = Callable[[ClipRecord, str], None]


class ClipIndex:
    """The SQLite index of one box's clips; edge-video writes, `edge clips` reads."""

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.path = Path(path)
        self.base = self.path.parent
        self.readonly = readonly
        self._clock = clock
        self._lock = threading.Lock()
        if not readonly:
            self.base.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
            self._prepare()
        except sqlite3.Error as exc:
            raise ClipIndexError(f"{self.path}: cannot open the clip index: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, timeout=2.0, isolation_level=None)
        else:
            db = sqlite3.connect(
                str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False
            )
        db.row_factory = sqlite3.Row
        return db

    def _prepare(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ClipIndexError(
                f"{self.path}: clip index schema {version} is newer than this edge version "
                f"understands ({SCHEMA_VERSION}): upgrade edge"
            )
        if self.readonly:
            if version == 0:
                raise ClipIndexError(f"{self.path}: the clip index is being created; try again")
            return
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        if version == 0:
            with self._write() as db:
                for statement in DDL:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.path.chmod(0o640)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise ClipIndexError(f"{self.path}: opened read-only; only edge-video writes it")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _guarded(self, action: str) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise ClipIndexError(f"{self.path}: cannot {action} the clip index: {exc}") from exc

    # -- paths ---------------------------------------------------------------------------------
    def _stored(self, path: Path) -> str:
        """Relative to the index when inside its directory, so a moved data_dir still works."""
        try:
            return str(path.resolve().relative_to(self.base.resolve()))
        except ValueError:
            return str(path.resolve())

    def _resolved(self, stored: str) -> Path:
        return self.base / stored

    # -- writing -------------------------------------------------------------------------------
    def add(self, info: ClipInfo, alarm_at: dt.datetime) -> ClipRecord:
        """Index a finished clip; ``alarm_at`` is the UTC time of its first alarm."""
        start = alarm_at + dt.timedelta(seconds=info.start_s - info.alarm_s)
        end = start + dt.timedelta(seconds=info.duration_s)
        snap_bytes, snap_sha = 0, None
        if info.snapshot is not None and info.snapshot.exists():
            snap_bytes, snap_sha = info.snapshot.stat().st_size, sha256_file(info.snapshot)
        row = (
            info.id, info.camera, iso_utc(start), iso_utc(end), info.duration_s,
            self._stored(info.path), self._stored(info.snapshot) if info.snapshot else None,
            info.bytes, snap_bytes, info.sha256, snap_sha, 0, iso_utc(self._clock()),
        )  # fmt: skip
        with self._guarded("write"), self._write() as db:
            db.execute(f"INSERT INTO clips ({COLUMNS}) VALUES ({','.join('?' * 13)})", row)
            db.executemany(
                "INSERT OR IGNORE INTO clip_events VALUES (?, ?)",
                [(info.id, e) for e in info.event_ids],
            )
        record = self.get(info.id)
        assert record is not None
        return record

    def mark_delivered(self, clip_id: str) -> bool:
        """The central station has the clip: it may now go first when space is short."""
        with self._guarded("write"), self._write() as db:
            n = db.execute("UPDATE clips SET delivered = 1 WHERE id = ?", (clip_id,)).rowcount
        return n > 0

    # -- reading -------------------------------------------------------------------------------
    def get(self, clip_id: str) -> ClipRecord | None:
        found = self._select(" WHERE id = ?", (clip_id,))
        return found[0] if found else None

    def for_event(self, event_id: str) -> list[ClipRecord]:
        """Every clip serving an event (one per camera that filmed it), oldest first."""
        sub = "SELECT clip_id FROM clip_events WHERE event_id = ?"
        return self._select(f" WHERE id IN ({sub}) ORDER BY start_ts", (event_id,))

    def find(self, ref: str) -> list[ClipRecord]:
        """``ref`` is a clip id, or an event id (then all of its clips)."""
        record = self.get(ref)
        return [record] if record else self.for_event(ref)

    def query(
        self, *, camera: str | None = None, since_ts: str | None = None, limit: int = 200
    ) -> list[ClipRecord]:
        """The newest ``limit`` clips matching, oldest first; ``since_ts`` in the index format."""
        clauses, params = [], []
        if camera:
            clauses.append("camera = ?")
            params.append(camera)
        if since_ts:
            clauses.append("end_ts >= ?")
            params.append(since_ts)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._select(f"{where} ORDER BY start_ts DESC LIMIT ?", (*params, limit))[::-1]

    def used_bytes(self) -> int:
        with self._guarded("read"):
            row = self._db.execute("SELECT SUM(bytes + snapshot_bytes) FROM clips").fetchone()
        return int(row[0] or 0)

    def _select(self, tail: str, params: Sequence[Any]) -> list[ClipRecord]:
        with self._guarded("read"):
            rows = self._db.execute(f"SELECT {COLUMNS} FROM clips{tail}", params).fetchall()
            events: dict[str, list[str]] = {r["id"]: [] for r in rows}
            if events:
                marks = ",".join("?" * len(events))
                for clip_id, event_id in self._db.execute(
                    f"SELECT clip_id, event_id FROM clip_events WHERE clip_id IN ({marks}) "
                    "ORDER BY rowid",
                    list(events),
                ):
                    events[clip_id].append(event_id)
        return [self._record(r, events[r["id"]]) for r in rows]

    def _record(self, row: sqlite3.Row, event_ids: list[str]) -> ClipRecord:
        return ClipRecord(
            id=row["id"], camera=row["camera"], event_ids=tuple(event_ids),
            start_ts=row["start_ts"], end_ts=row["end_ts"], duration_s=row["duration_s"],
            path=self._resolved(row["path"]),
            snapshot=self._resolved(row["snapshot"]) if row["snapshot"] else None,
            bytes=row["bytes"], snapshot_bytes=row["snapshot_bytes"], sha256=row["sha256"],
            snapshot_sha256=row["snapshot_sha256"], delivered=bool(row["delivered"]),
            created_at=row["created_at"],
        )  # fmt: skip

    # -- retention -----------------------------------------------------------------------------
    def enforce(
        self, retention_days: int, quota_bytes: int, on_deleted: DeletedCallback | None = None
    ) -> list[tuple[ClipRecord, str]]:
        """Delete clips past the age limit, then the fewest needed to fit the quota.

        Returns (record, reason) for each deletion, in order; each is also reported to
        ``on_deleted`` as soon as its files are gone.
        """
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1 (got {retention_days})")
        days = min(retention_days, RETENTION_MAX_DAYS)
        now = self._clock()
        cutoff = iso_utc(now - dt.timedelta(days=days))
        deleted: list[tuple[ClipRecord, str]] = []
        for record in self._select(" WHERE start_ts < ? ORDER BY start_ts", (cutoff,)):
            if self._delete(record):
                deleted.append((record, RETENTION))
                if on_deleted:
                    on_deleted(record, RETENTION)
        used = self.used_bytes()
        if used > quota_bytes:  # delivered first, then the oldest of each group
            for record in self._select(" ORDER BY delivered DESC, start_ts, id", ()):
                if used <= quota_bytes:
                    break
                if self._delete(record):
                    used -= record.disk_bytes
                    deleted.append((record, QUOTA))
                    if on_deleted:
                        on_deleted(record, QUOTA)
        self._sweep(now, days)
        return deleted

    def _delete(self, record: ClipRecord) -> bool:
        """Files first, then the row: a crash in between leaves a row the next sweep retries."""
        try:
            record.path.unlink(missing_ok=True)
            if record.snapshot:
                record.snapshot.unlink(missing_ok=True)
        except OSError as exc:
            log.error("clip %s: cannot delete its files: %s (fix permissions)", record.id, exc)
            return False
        with self._guarded("write"), self._write() as db:
            db.execute("DELETE FROM clip_events WHERE clip_id = ?", (record.id,))
            db.execute("DELETE FROM clips WHERE id = ?", (record.id,))
        log.info("clip %s (%s, %s) deleted", record.id, record.camera, record.start_ts)
        return True

    def _sweep(self, now: dt.datetime, days: int) -> None:
        """Remove files no row points to: temporaries cut by a crash, unindexed clips too old."""
        with self._guarded("read"):
            rows = self._db.execute("SELECT path, snapshot FROM clips").fetchall()
        known = {self._resolved(v).name for row in rows for v in row if v}
        horizon = now.timestamp()
        for path in self.base.iterdir():
            if path.suffix not in (".mp4", ".jpg", ".tmp") or path.name in known:
                continue
            try:
                age = horizon - path.stat().st_mtime
                if age > (TEMP_MAX_AGE_S if path.suffix == ".tmp" else days * 86_400):
                    path.unlink()
                    log.warning("removed stray clip file %s", path)
            except OSError as exc:  # gone meanwhile, or not ours to delete
                log.debug("stray file %s left: %s", path, exc)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ClipIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
