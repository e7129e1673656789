"""The journal's hash chain: what is hashed, how, and how one row is checked against it.

See the edge.journal docstring for why a chain and what it cannot prove.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

GENESIS = "0" * 64  # ``prev`` of the very first row
SEP = (",", ":")
# Columns hashed into the chain; the table adds the two chain columns (prev, hash).
CONTENT = (
    "seq", "id", "ts", "mono_ns", "boot_id", "kind", "sia", "cid", "qualifier",
    "zone", "zone_name", "partition", "confirmed", "details",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """Outcome of :meth:`Journal.verify`; ``reason`` is a sentence an operator can act on."""

    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str


def chain_hash(prev: str, content: dict[str, Any]) -> str:
    """SHA-256 over ``prev`` + canonical JSON (sorted keys, compact) of the content fields."""
    canonical = json.dumps(content, sort_keys=True, separators=SEP)
    import hashlib  # here, not at import: see edge.alarm.lean

    return hashlib.sha256((prev + canonical).encode("utf-8")).hexdigest()


def check_row(row: sqlite3.Row, seq: int, prev: str) -> str | None:
    """Why ``row`` breaks the chain that ended at (seq, prev), or None if it holds."""
    if row["seq"] != seq + 1:
        if row["seq"] > seq + 1:
            return f"seq {seq + 1} to {row['seq'] - 1} are missing: rows were deleted"
        return f"expected seq {seq + 1}: a row was inserted below the prune anchor"
    if row["prev"] != prev:
        return (
            f"its prev hash is not the hash of seq {seq}: seq {seq} was rewritten, "
            "or rows were deleted, inserted or reordered"
        )
    try:
        details = json.loads(row["details"])
    except (TypeError, ValueError):
        return "its details are not valid JSON: the row was edited"
    content = {name: row[name] for name in CONTENT}
    content["details"] = details
    if chain_hash(prev, content) != row["hash"]:
        return "its content does not match its hash: the row was edited"
    return None
