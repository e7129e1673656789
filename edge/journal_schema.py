"""The journal's on-disk format: tables, triggers, columns, the row ↔ Event mapping and
the timestamp text (whose order is time order, so SQL can compare it)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

from edge.errors import JournalError
from edge.events import Event, Kind
from edge.journal_chain import CONTENT

SCHEMA_VERSION = 1
# Columns hashed into the chain, then the two chain columns.
COLUMNS = (*CONTENT, "prev", "hash")
SELECT_EVENTS = f"SELECT {', '.join(COLUMNS)} FROM events"
INSERT_EVENT = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def _guard(table: str, op: str, why: str) -> str:
    return (
        f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"WHEN NOT EXISTS (SELECT 1 FROM pruning) BEGIN SELECT RAISE(ABORT, '{why}'); END"
    )


DDL = (
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, ts TEXT NOT NULL, mono_ns INTEGER,
        boot_id TEXT, kind TEXT NOT NULL, sia TEXT, cid INTEGER, qualifier INTEGER, zone TEXT,
        zone_name TEXT, partition TEXT, confirmed INTEGER NOT NULL, details TEXT NOT NULL,
        prev TEXT NOT NULL, hash TEXT NOT NULL)""",
    "CREATE INDEX events_ts ON events(ts)",
    "CREATE INDEX events_zone ON events(zone, seq)",
    # The hash of the last pruned row: verify() starts the chain from it.
    "CREATE TABLE anchor (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL,"
    " hash TEXT NOT NULL)",
    # Holds a row only inside prune()'s own transaction; the triggers let deletes through then.
    "CREATE TABLE pruning (one INTEGER PRIMARY KEY CHECK (one = 1))",
    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
    "BEGIN SELECT RAISE(ABORT, 'the journal is append-only: events cannot be changed'); END",
    _guard("events", "DELETE", "the journal is append-only: only prune() removes events"),
    *(_guard("anchor", op, "only prune() writes the anchor") for op in ("INSERT", "UPDATE")),
    _guard("anchor", "DELETE", "only prune() writes the anchor"),
)


def iso_utc(when: dt.datetime) -> str:
    """The journal's timestamp format (UTC, milliseconds, Z): text order is time order."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    when = when.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> dt.datetime:
    """ISO 8601 with an optional Z (Python 3.10 lacks it); a time without offset is UTC."""
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _details_of(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {"unreadable_details": text}
    return value if isinstance(value, dict) else {"details": value}


def row_to_event(row: sqlite3.Row) -> Event:
    try:
        kind = Kind(row["kind"])
    except ValueError as exc:
        raise JournalError(
            f"journal row seq {row['seq']} has unknown kind {row['kind']!r}: it was written by "
            "a newer edge version; upgrade this one"
        ) from exc
    return Event(
        kind=kind, zone_id=row["zone"], zone_name=row["zone_name"], partition=row["partition"],
        confirmed=bool(row["confirmed"]), details=_details_of(row["details"]), id=row["id"],
        ts=row["ts"], mono_ns=row["mono_ns"] or 0, seq=row["seq"], prev=row["prev"],
        hash=row["hash"],
    )  # fmt: skip
