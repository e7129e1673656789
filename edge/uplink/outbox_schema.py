"""What the outbox stores and in which order it sends: its tables, send priorities, retry
backoff, the item type and its error. Shared by the file (:mod:`edge.uplink.outbox_store`),
the memory overlay of a full disk (:mod:`edge.uplink.outbox_memory`) and the facade
(:mod:`edge.uplink.outbox`)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.disk import is_disk_full
from edge.errors import EdgeError
from edge.events import Category, Event, Kind
from edge.journal import Journal, parse_iso

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
ITEM_COLUMNS = "transport, seq, event_id, priority, attempts, first_sent, next_try"
# A pending row as inserted: transport, priority, seq, event_id, ts, attempts, first_sent,
# next_try (the column order of the table).
Row = tuple[str, int, int, str, float, int, "float | None", float]


class OutboxError(EdgeError, RuntimeError):
    """The outbox file cannot be opened or written."""


@dataclass(frozen=True)
class OutboxItem:
    transport: str
    seq: int
    event_id: str
    priority: int
    attempts: int
    first_sent: float | None
    next_try: float


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


def new_row(transport: str, event: Event) -> Row:
    """The pending row of a journal event not sent yet (due at once)."""
    return (transport, priority_of(event.kind), event.seq, event.id, _epoch(event), 0, None, 0.0)


def _epoch(event: Event) -> float:
    try:
        return parse_iso(event.ts).timestamp()
    except (ValueError, IndexError):
        log.warning("event %s has an unreadable ts %r; using now for its age", event.id, event.ts)
        return time.time()


def chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), SQL_CHUNK):
        yield values[start : start + SQL_CHUNK]


def journal_replaced(journal: Journal, high: tuple[int, str], last: int) -> bool:
    """The outbox's high-water row (seq, id) is gone from where it must be in ``journal``
    (whose newest seq is ``last``): this is another journal than the one it was built from."""
    high_seq, high_id = high
    if high_seq == 0:
        return False
    if last < high_seq:
        return True
    event = journal.get(high_id)
    if event is not None:
        return event.seq != high_seq
    first = journal.since(0, 1)  # pruned past our mark is not a replacement
    return bool(first) and first[0].seq <= high_seq


def outbox_error(path: Path, action: str, exc: BaseException) -> OutboxError:
    """An error naming the file and the fix."""
    low = str(exc).lower()
    if isinstance(exc, PermissionError) or "readonly" in low or "unable to open" in low:
        fix = f"run as the edge user or fix ownership of {path.parent}"
    elif is_disk_full(exc):
        fix = f"free space on the disk holding {path.parent}"
    elif "not a database" in low or "malformed" in low:
        fix = (
            f"stop the alarm service and move the file aside (mv {path} "
            f"{path}.bad); it is rebuilt from the journal, which resends the events "
            "the journal holds (the central station ignores duplicate ids)"
        )
    else:
        fix = "only the alarm service may open the outbox; check the disk (dmesg)"
    return OutboxError(f"{path}: cannot {action} the outbox: {exc}: {fix}")
