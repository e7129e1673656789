"""The journal as the checks read it: read-only, one short query per run, cached.

Several checks learn from what edge-alarm journaled — its starts and stops, the DC-09 paths
that failed or came back, the receivers' refusals, camera faults, saved clips — because the
journal is on disk when every service is down, and it keeps what a retained status does
not (how often, since when). The checks never write it and never wait for it: the file is
opened read-only with a short busy timeout (edge-alarm, its one writer, keeps committing),
only the newest ``WINDOW`` rows are looked at (a seq range on the primary key, so the cost
does not grow with the journal), and a journal that cannot be read makes the callers say
``unknown`` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

from edge.diag.sources import Sources

WINDOW = 20_000  # newest journal rows looked at (a busy day of a large site)
BUSY_MS = 200  # wait at most this for edge-alarm's commit in progress
JOURNAL_FILE = "journal.db"  # edge.journal_file.JOURNAL_FILE (a test keeps them equal)
# The kinds any check reads; one query fetches them all.
KINDS = (
    "service_started",
    "service_stopped",
    "receiver_path_fail",
    "receiver_path_restore",
    "transmission_rejected",
    "camera_fault",
    "camera_fault_restore",
    "video_loss",
    "video_restore",
    "clip_saved",
    "loop_fault",
    "fire_loop_fault",
    "tamper",
    "bypass",
    "swinger_shutdown",
)
CACHE = "journal_view"


@dataclasses.dataclass(frozen=True)
class Row:
    seq: int
    ts: float  # seconds since the epoch (UTC)
    kind: str
    zone: str | None
    details: dict[str, Any]


class JournalUnreadable(Exception):
    """The journal cannot be read now; the message says why, in words."""


def journal_file(src: Sources) -> Path:
    return Path(src.cfg.paths.data_dir) / JOURNAL_FILE


def connect(path: Path, *, rows: bool = False) -> sqlite3.Connection:
    """A read-only connection to the journal; JournalUnreadable when there is none."""
    if not path.exists():
        raise JournalUnreadable(f"no journal at {path} yet (edge-alarm creates it)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_MS / 1000)
    except sqlite3.Error as exc:
        raise JournalUnreadable(f"cannot open {path}: {exc}") from exc
    if rows:
        db.row_factory = sqlite3.Row
    return db


def recent(src: Sources, *kinds: str) -> list[Row]:
    """Rows of these kinds among the newest WINDOW, oldest first (JournalUnreadable if the
    journal cannot be read: the same reason for every caller of this run)."""
    cached = src.extra.get(CACHE)
    if cached is None:
        try:
            cached = _read(journal_file(src))
        except JournalUnreadable as exc:
            cached = exc
        src.extra[CACHE] = cached
    if isinstance(cached, JournalUnreadable):
        raise cached
    wanted = set(kinds)
    return [r for r in cached if r.kind in wanted]


def _read(path: Path) -> list[Row]:
    from edge.journal_schema import parse_iso

    db = connect(path)
    try:
        top = db.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0
        marks = ",".join("?" * len(KINDS))
        found = db.execute(
            f"SELECT seq, ts, kind, zone, details FROM events WHERE seq > ? AND kind IN ({marks}) "
            "ORDER BY seq",
            (top - WINDOW, *KINDS),
        ).fetchall()
    except sqlite3.Error as exc:
        raise JournalUnreadable(f"cannot read {path}: {exc}") from exc
    finally:
        db.close()
    out = []
    for seq, ts, kind, zone, details in found:
        try:
            when = parse_iso(ts).timestamp()
            body = json.loads(details)
        except (ValueError, TypeError, IndexError):
            continue  # an unreadable row is the integrity check's business, not ours
        out.append(Row(seq, when, kind, zone, body if isinstance(body, dict) else {}))
    return out
