"""Faults the central station must hear about, read from the reported diagnostics.

Most faults that matter to the station are journaled where they happen (a full disk by
edge-alarm's disk watch, video loss from edge-video's reports, tampers by the panel). Two can
only be seen across checks, once their hold-off passed, so they are judged here from the
reported findings after each run of edge-alarm's diagnostics:

- every transmission path down: each configured path fails (``central.link`` for MQTT, every
  ``dc09.path`` for DC-09) → TRANSMISSION_LOST, then TRANSMISSION_RESTORE when one is back
  (sent once a path works: the station learns when and for how long the box was cut off);
- the clock not set or not synchronised (``system.clock`` warn or fail) → CLOCK_FAULT, then
  CLOCK_RESTORE.

Each fault is journaled once on the way in and once on the way out. Which ones are open
survives a restart: it is read back from the journal (:func:`open_in_journal`), so a fault
that lasts across a restart is not sent twice.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge.config import SiteConfig
from edge.diag.model import Finding, Status
from edge.events import Event, Kind

log = logging.getLogger(__name__)

# fault name → (kind on the way in, kind on the way out)
FAULTS: dict[str, tuple[Kind, Kind]] = {
    "transmission": (Kind.TRANSMISSION_LOST, Kind.TRANSMISSION_RESTORE),
    "clock": (Kind.CLOCK_FAULT, Kind.CLOCK_RESTORE),
}
WINDOW = 20_000  # newest journal rows read back at start


class StationFaults:
    """Open / closed state of each fault, and the events that change it."""

    def __init__(self, cfg: SiteConfig, open_: set[str] | None = None) -> None:
        self.cfg = cfg
        self.open: dict[str, float] = {name: time.monotonic() for name in open_ or ()}

    def judge(self, findings: list[Finding]) -> list[Event]:
        """The events to journal after a run whose reported findings are ``findings``."""
        out: list[Event] = []
        for name, why in (("transmission", self._transmission(findings)),
                          ("clock", self._clock(findings))):  # fmt: skip
            came, went = FAULTS[name]
            if why is not None and name not in self.open:
                self.open[name] = time.monotonic()
                out.append(Event(came, details=why))
            elif why is None and name in self.open:
                lasted = time.monotonic() - self.open.pop(name)
                out.append(Event(went, details={"duration_s": round(lasted)}))
        return out

    def _transmission(self, findings: list[Finding]) -> dict[str, Any] | None:
        paths: dict[str, list[Finding]] = {}
        central = self.cfg.central
        if central is not None and central.enabled:
            paths["mqtt"] = [f for f in findings if f.check == "central.link"]
        if self.cfg.dc09 is not None and self.cfg.dc09.enabled:
            paths["dc09"] = [f for f in findings if f.check == "dc09.path"]
        if not paths:
            return None
        for found in paths.values():
            if not found or any(f.status < Status.FAIL for f in found):
                return None
        return {
            "paths": sorted(paths),
            "why": [f"{f.check}@{f.scope}: {f.summary}" for v in paths.values() for f in v],
        }

    @staticmethod
    def _clock(findings: list[Finding]) -> dict[str, Any] | None:
        for f in findings:
            if f.check == "system.clock" and f.status >= Status.WARN:
                return {"status": f.status.word, "why": f.summary}
        return None


def open_in_journal(journal: Path) -> set[str]:
    """The faults whose last journaled event is the way in (read-only, newest rows only);
    an unreadable journal gives none (the worst outcome is one fault sent twice)."""
    kinds = {
        k.value: (name, k is came) for name, (came, went) in FAULTS.items() for k in (came, went)
    }
    if not journal.exists():
        return set()
    try:
        db = sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True, timeout=0.5)
        try:
            top = db.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0
            marks = ",".join("?" * len(kinds))
            rows = db.execute(
                f"SELECT kind FROM events WHERE seq > ? AND kind IN ({marks}) ORDER BY seq",
                (top - WINDOW, *kinds),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.warning("open faults not read back from %s: %s", journal, exc)
        return set()
    state: dict[str, bool] = {}
    for (kind,) in rows:
        name, opened = kinds[kind]
        state[name] = opened
    return {name for name, opened in state.items() if opened}
