"""Hold-offs: a finding is reported worse than ``ok`` only once it has lasted its hold-off.

A link that drops for two seconds, a camera that misses a frame, a disk that fills for the
length of a clip: real, but not faults. Each check declares a hold-off; until a raw finding
has kept its status that long the reported one stays what it was (``ok`` at first), with the
raw one in ``evidence["pending"]`` so nothing is hidden from whoever reads the figures.
Recovery is reported at once: a fixed fault should look fixed.

The state is a small dict (finding key → status, first seen, count) that a long-running
service keeps in memory and `edge diag` keeps in a file between runs, bounded in entries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.diag.model import Finding, Status
from edge.fsutil import atomic_write

log = logging.getLogger(__name__)

MAX_ENTRIES = 2048  # findings remembered; the oldest forgotten first


class HoldOff:
    def __init__(self, clock: Callable[[], float]) -> None:
        """``clock``: wall-clock seconds (time.time): the state survives between CLI runs."""
        self.clock = clock
        # key -> [raw status, raw since, reported status, reported since, count]
        self._state: dict[str, list[Any]] = {}

    def apply(self, finding: Finding, holdoff_s: float) -> Finding:
        now = self.clock()
        raw = finding.status
        entry = self._state.pop(finding.key, None)
        if entry is None:
            # First sight: nothing to hold against (a fresh `edge diag` must still tell the
            # truth about a box that has been broken for an hour): trust the evidence's own
            # age when the check gives one, else start the clock now.
            age = float(finding.evidence.get("age_s") or 0.0)
            entry = [raw, now - age, Status.OK, now, 0]
        if entry[0] != raw:
            entry[0], entry[1] = raw, now
        # Only faults wait: "unknown" is not one, and recovery shows at once.
        held = raw >= Status.WARN and raw > entry[2] and now - entry[1] < holdoff_s
        if not held and raw != entry[2]:
            entry[2], entry[3] = raw, entry[1] if raw > Status.OK else now
            entry[4] += 1 if raw > Status.OK else 0
        self._state[finding.key] = entry
        while len(self._state) > MAX_ENTRIES:
            self._state.pop(next(iter(self._state)))
        if held:
            shown = finding.with_(
                status=Status(entry[2]),
                summary=f"{finding.summary} (for {now - entry[1]:.0f} s; reported after "
                f"{holdoff_s:.0f} s)",
                evidence={**finding.evidence, "pending": raw.word},
            )
        else:
            shown = finding
        return shown.with_(since=_iso(entry[3]), count=max(1, entry[4]))

    # -- persistence for one-shot runs ----------------------------------------------------------
    def load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self._state = {
                str(k): [Status(v[0]), float(v[1]), Status(v[2]), float(v[3]), int(v[4])]
                for k, v in list(data.items())[-MAX_ENTRIES:]
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
            log.warning("diagnostics state %s unreadable (%s): starting afresh", path, exc)
            self._state = {}

    def save(self, path: Path) -> None:
        data = {k: [int(v[0]), v[1], int(v[2]), v[3], v[4]] for k, v in self._state.items()}
        try:
            atomic_write(path, json.dumps(data).encode(), mode=0o600)
        except OSError as exc:  # a read-only or full disk must not stop a diagnosis
            log.warning("diagnostics state not saved to %s: %s", path, exc)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")
