"""Which rows the journal's retention rules let go (see :meth:`edge.journal.Journal.prune`).

Only a prefix is ever removed (a row that must stay protects all rows after it), so the
chain stays contiguous from the prune anchor.
"""

from __future__ import annotations

import sqlite3

_NEWEST = "SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?"


def prune_upto(
    db: sqlite3.Connection,
    *,
    cutoff: str,
    keep_events: int,
    max_events: int,
    last_seq: int,
    floor_seq: int | None = None,
) -> int | None:
    """Highest seq that may go (it and every row before it), or None.

    A row may go if it is older than ``cutoff`` and not among the newest ``keep_events``
    (nor at or after ``floor_seq``, the oldest event still owed to the central station), or
    if the journal holds more than ``max_events``.
    """
    q = db.execute
    by_age = None
    if keep_events == 0:
        protect: int | None = last_seq + 1
    else:
        row = q(_NEWEST, (keep_events - 1,)).fetchone()
        protect = row[0] if row else None  # fewer rows than keep_events: keep all
    if protect is not None:
        stop = q("SELECT seq FROM events WHERE ts >= ? OR seq >= ? ORDER BY seq LIMIT 1",
                 (cutoff, protect)).fetchone()  # fmt: skip
        by_age = q("SELECT MAX(seq) FROM events WHERE seq < ?",
                   (stop[0] if stop else protect,)).fetchone()[0]  # fmt: skip
    if by_age is not None and floor_seq is not None:
        by_age = min(by_age, floor_seq - 1)
    row = q(_NEWEST, (max_events,)).fetchone()
    candidates = [s for s in (by_age, row[0] if row else None) if s is not None]
    return max(candidates) if candidates else None
