"""`edge diag` on edge-alarm's own report, when it is fresh.

edge-alarm runs every check every ~10 s and keeps their hold-offs in memory, so its report
(retained on ``edge/diag/report``) says since when each fault lasts, in real durations —
which a one-shot `edge diag` cannot know. The command line uses that report while it is
fresh and adds what only it can see: that the box broker answers and that edge-alarm itself
is up (a stopped edge-alarm leaves an old report behind: then `edge diag` runs the checks
itself, as before).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from edge.config import SiteConfig
from edge.diag.checks.common import epoch
from edge.diag.holdoff import HoldOff
from edge.diag.model import Status
from edge.diag.registry import run
from edge.diag.sources import Sources

FRESH_S = 30.0  # three of edge-alarm's intervals
OWN = ("bus.broker", "service.alarm")  # what only the command line can tell


def use(cfg: SiteConfig, src: Sources, names: Iterable[str] | None) -> dict[str, Any] | None:
    """The report to print from edge-alarm's retained one, or None to run the checks here."""
    report = src.extra.get("report")
    if not fresh(cfg, report, src.now):
        return None
    assert isinstance(report, dict)
    own = run(src, HoldOff(time.time), OWN)  # both without hold-off
    if any(f.status > Status.OK for f in own):
        return None  # edge-alarm is down or unreachable: its report is not the truth now
    wanted = set(names) if names is not None else None
    findings = [f for f in own if wanted is None or f.check in wanted]
    dicts = [f.to_dict() for f in findings]
    dicts += [
        f
        for f in report["findings"]
        if isinstance(f, dict) and f.get("check") not in OWN
        and (wanted is None or f.get("check") in wanted)
    ]  # fmt: skip
    out = dict(report)
    out["findings"] = _ordered(dicts)
    statuses = [Status[str(f["status"]).upper()] for f in out["findings"]]
    out["status"] = max(statuses, default=Status.OK).word
    out["counts"] = {s.word: statuses.count(s) for s in Status}
    out["source"] = f"edge-alarm's report of {round(age(report, src.now) or 0)} s ago"
    return out


def fresh(cfg: SiteConfig, report: Any, now: float) -> bool:
    if not isinstance(report, dict) or report.get("site") != cfg.site.id:
        return False
    if not isinstance(report.get("findings"), list):
        return False
    if any(not isinstance(f, dict) or str(f.get("status")).upper() not in Status.__members__
           for f in report["findings"]):  # fmt: skip
        return False
    seconds = age(report, now)
    return seconds is not None and seconds <= FRESH_S


def age(report: dict[str, Any], now: float) -> float | None:
    when = epoch(report.get("ts"))
    return None if when is None else max(0.0, now - when)


def _ordered(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst first, as :func:`edge.diag.model.ordered` sorts findings."""
    return sorted(
        findings,
        key=lambda f: (-Status[str(f["status"]).upper()], str(f["check"]), str(f["scope"])),
    )
