"""The diagnostics report as the local web server gives it: JSON for the installer page
(``/api/diag``) and the Prometheus text format (``/metrics``), so a fleet can be watched with
standard tools.

Both come from edge-alarm's retained report (``edge/diag/report``, refreshed every ~10 s),
never from a run of their own: what a scraper, the page, `edge diag` and the central station
see is the same set of findings, with the same hold-offs.

Metrics (text format 0.0.4), every sample labelled with the site:

- ``edge_diag_report_available`` 1 while a report is known, ``edge_diag_report_age_seconds``;
- ``edge_diag_check_status{check,scope,status}``: 1 for the finding's status, 0 for the
  three others (a state set: alert on ``{status="fail"} == 1``), and
  ``edge_diag_check_severity{check,scope}``: 0 ok, 1 unknown, 2 warn, 3 fail;
- ``edge_diag_findings{status}``: how many findings have each status;
- one gauge per numeric figure of the evidence, named after its check and key, with the
  unit in the name in base units: ``free_mb`` → ``edge_diag_system_disk_free_bytes``,
  ``age_s`` → ``…_age_seconds``, ``cpu_c`` → ``…_cpu_celsius``; true / false as 1 / 0.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from edge.diag.checks.common import epoch

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("ok", "unknown", "warn", "fail")
STALE_S = 60.0  # a report older than this says edge-alarm's diagnostics stopped
MiB = 1024 * 1024
# evidence key suffix → (metric suffix, factor to the base unit)
UNITS = (
    ("_mb", "_bytes", MiB),
    ("_kb", "_bytes", 1024),
    ("_ms", "_seconds", 0.001),
    ("_s", "_seconds", 1),
    ("_c", "_celsius", 1),
    ("_pct", "_ratio", 0.01),
)
_BAD = re.compile(r"[^a-zA-Z0-9_]")


def age_s(report: dict[str, Any], now: float | None = None) -> float | None:
    when = epoch(report.get("ts"))
    return None if when is None else max(0.0, (now or time.time()) - when)


def api_view(report: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The report for the installer page, with its age and whether it is still fresh."""
    age = age_s(report, now)
    return {**report, "age_s": None if age is None else round(age, 1),
            "stale": age is None or age > STALE_S}  # fmt: skip


def render(report: dict[str, Any] | None, site: str, now: float | None = None) -> str:
    """The Prometheus text of ``report`` (None: only ``edge_diag_report_available 0``)."""
    out = _Families(site)
    out.add("edge_diag_report_available", "1 when edge-alarm's diagnostics report is known", {},
            0 if report is None else 1)  # fmt: skip
    if report is None:
        return out.text()
    age = age_s(report, now)
    if age is not None:
        out.add("edge_diag_report_age_seconds", "age of the diagnostics report", {}, age)
    findings = [f for f in report.get("findings") or [] if isinstance(f, dict)]
    for status in STATUSES:
        count = sum(1 for f in findings if f.get("status") == status)
        out.add("edge_diag_findings", "findings by status", {"status": status}, count)
    for f in findings:
        labels = {"check": str(f.get("check")), "scope": str(f.get("scope"))}
        word = str(f.get("status"))
        for s in STATUSES:
            out.add("edge_diag_check_status", "1 for the finding's status (a state set)",
                    {**labels, "status": s}, 1 if word == s else 0)  # fmt: skip
        if word in STATUSES:
            out.add("edge_diag_check_severity", "0 ok, 1 unknown, 2 warn, 3 fail", labels,
                    STATUSES.index(word))  # fmt: skip
        evidence = f.get("evidence")
        for key, value in (evidence if isinstance(evidence, dict) else {}).items():
            _figure(out, str(f.get("check")), str(key), value, {"scope": labels["scope"]})
    return out.text()


def _figure(out: _Families, check: str, key: str, value: Any, labels: dict[str, str]) -> None:
    if isinstance(value, bool):
        number = 1.0 if value else 0.0
    elif isinstance(value, int | float) and math.isfinite(value):
        number = float(value)
    else:
        return  # words, lists and tables are in /api/diag
    suffix, factor = "", 1.0
    for ending, unit, scale in UNITS:
        if key.endswith(ending):
            key, suffix, factor = key[: -len(ending)], unit, scale
            break
    name = _BAD.sub("_", f"edge_diag_{check}_{key}{suffix}".replace(".", "_")).lower()
    out.add(name, f"{check}: evidence {key}{suffix.replace('_', ' ')}", labels, number * factor)


class _Families:
    """Samples grouped by metric (the text format wants each family in one block)."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.families: dict[str, tuple[str, list[str]]] = {}

    def add(self, name: str, help_: str, labels: dict[str, str], value: float) -> None:
        pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in {"site": self.site, **labels}.items())
        family = self.families.setdefault(name, (help_, []))
        family[1].append(f"{name}{{{pairs}}} {_number(value)}")

    def text(self) -> str:
        lines = []
        for name, (help_, samples) in self.families.items():
            lines += [f"# HELP {name} {_help(help_)}", f"# TYPE {name} gauge", *samples]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
