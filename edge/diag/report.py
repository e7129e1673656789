"""A run of the checks as a report: the JSON the central station gets (docs/protocol.md,
``sites/<id>/diag``), the table `edge diag` prints, and the exit status."""

from __future__ import annotations

import datetime as dt
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge import __version__
from edge.config import SiteConfig
from edge.diag.holdoff import HoldOff
from edge.diag.model import Finding, Status, worst
from edge.diag.registry import run
from edge.diag.sources import Sources
from edge.sitetime import SiteZone, local, site_zone

MARK = {"fail": "FAIL", "warn": "WARN", "unknown": " ?  ", "ok": " ok "}


def build(
    cfg: SiteConfig, sources: Sources, names: Iterable[str] | None, state: Path | None
) -> dict[str, Any]:
    """Run the checks through the hold-off kept in ``state`` (a file) and report them."""
    holdoff = HoldOff(time.time)
    if state is not None:
        holdoff.load(state)
    findings = run(sources, holdoff, names)
    if state is not None:
        holdoff.save(state)
    return assemble(cfg, findings)


def assemble(cfg: SiteConfig, findings: list[Finding]) -> dict[str, Any]:
    """The report of ``findings`` (worst first), as `edge diag --json` and the station get it."""
    return {
        "v": 1,
        "site": cfg.site.id,
        "ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "version": __version__,
        "status": worst(findings).word,
        "counts": {s.word: sum(1 for f in findings if f.status == s) for s in Status},
        "findings": [f.to_dict() for f in findings],
    }


def exit_code(report: dict[str, Any]) -> int:
    return {"fail": 2, "warn": 1}.get(report["status"], 0)


def as_text(
    report: dict[str, Any], *, show_ok: bool, width: int, zone: SiteZone | None = None
) -> str:
    """Worst first; each problem with its remedy underneath; ok lines only when asked.

    Times (the report's, and since when a problem lasts) are in ``zone``, the site's, named
    in the first line; the JSON keeps UTC."""
    zone = zone or site_zone(None)
    counts = report["counts"]
    head = (
        f"site {report['site']}: {report['status'].upper()} — {counts['fail']} failing, "
        f"{counts['warn']} warning, {counts['unknown']} unknown, {counts['ok']} ok "
        f"({local(report.get('ts'), zone)}, {zone.describe()})"
    )
    lines = [head]
    for f in report["findings"]:
        if f["status"] == "ok" and not show_ok:
            continue
        scope = "" if f["scope"] == "box" else f" [{f['scope']}]"
        since = ""
        if f["status"] in ("warn", "fail") and f.get("since"):
            count = f.get("count") or 1
            again = f", {count} times" if count > 1 else ""
            since = f" (since {local(f['since'], zone)}{again})"
        lines.append(f"{MARK[f['status']]} {f['check']}{scope}: {f['summary']}{since}")
        if f["remedy"]:
            wrapped = textwrap.wrap(f"→ {f['remedy']}", width - 7)
            lines += [f"       {w}" for w in wrapped]
    if counts["ok"] and not show_ok:
        lines.append(f"({counts['ok']} check(s) ok: `edge diag --all` lists them)")
    return "\n".join(lines)
