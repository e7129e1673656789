"""The services' restart history: crash loops, unclean stops, the last clean stop.

edge-alarm journals ``service_started`` at each start (with ``previous_stop``: ``clean``,
``unclean`` — killed, crashed, stopped by the watchdog or a power cut — or ``none`` for the
first start of the box) and ``service_stopped`` at a clean stop (``reason``, ``clean``); both
are read defensively, since older journals lack the details. systemd's own count of the
restarts it made (``NRestarts``) completes the picture where ``systemctl`` answers.

A crash loop is ``LOOP_STARTS`` starts within ``LOOP_WINDOW_S``: a failure. A start after an
unclean stop in the last ``UNCLEAN_WARN_S`` is a warning (one is a power cut; several are a
fault to report).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from edge.diag.checks import journal_view
from edge.diag.checks.common import duration
from edge.diag.model import Finding, fail, ok, unknown, warn
from edge.diag.registry import check
from edge.diag.sources import Sources

LOOP_STARTS = 3
LOOP_WINDOW_S = 600.0
UNCLEAN_WARN_S = 3600.0
TOOL_S = 0.3
UNITS = ("edge-alarm", "edge-video", "edge-broker")
PROPERTIES = "NRestarts,ActiveState,SubState,Result,ExecMainStartTimestamp"


@check("service.restarts", holdoff_s=0, about="edge-alarm's starts and stops; systemd restarts")
def restarts(src: Sources) -> list[Finding]:
    return [_history(src), *_systemd(src)]


def _history(src: Sources) -> Finding:
    name = "service.restarts"
    try:
        rows = journal_view.recent(src, "service_started", "service_stopped")
    except journal_view.JournalUnreadable as exc:
        return unknown(name, f"cannot read edge-alarm's history: {exc}", scope="edge-alarm")
    starts = [r for r in rows if r.kind == "service_started"]
    stops = [r for r in rows if r.kind == "service_stopped" and r.details.get("clean") is True]
    recent = [r for r in starts if src.now - r.ts <= LOOP_WINDOW_S]
    unclean = [r for r in starts if r.details.get("previous_stop") == "unclean"]
    ev: dict[str, Any] = {
        "starts": len(starts),
        f"starts_{LOOP_WINDOW_S:.0f}s": len(recent),
        "unclean": len(unclean),
    }
    if stops:
        last = stops[-1]
        ev["last_clean_stop_age_s"] = round(src.now - last.ts)
        ev["last_clean_stop_reason"] = str(last.details.get("reason") or "")[:200]
    if not starts:
        return unknown(
            name, "no start of edge-alarm in the recent journal", evidence=ev, scope="edge-alarm"
        )
    since_start = src.now - starts[-1].ts
    ev["last_start_age_s"] = round(since_start)
    if len(recent) >= LOOP_STARTS:
        return fail(
            name,
            f"edge-alarm started {len(recent)} times in the last {duration(LOOP_WINDOW_S)}: "
            "it keeps crashing",
            "call a technician with `journalctl -u edge-alarm -n 200` and `edge diag bundle`; "
            "`edge config check` first: a wrong site file is the usual cause",
            evidence=ev,
            scope="edge-alarm",
        )
    last_unclean = unclean[-1] if unclean else None
    if last_unclean is not None and src.now - last_unclean.ts <= UNCLEAN_WARN_S:
        return warn(
            name,
            f"edge-alarm restarted {duration(src.now - last_unclean.ts)} ago after an unclean "
            "stop (crash, watchdog or power cut)",
            "if the power was not cut, report it with `journalctl -u edge-alarm -b -1 -n 100` "
            "(the run before the restart)",
            evidence=ev,
            scope="edge-alarm",
        )
    if rows[-1].kind == "service_stopped":
        reason = str(rows[-1].details.get("reason") or "no reason given")
        words = f"edge-alarm stopped {duration(src.now - rows[-1].ts)} ago ({reason})"
    else:
        words = f"edge-alarm running since its start {duration(since_start)} ago"
        if stops:
            words += f"; last clean stop {duration(ev['last_clean_stop_age_s'])} ago"
    return ok(name, words, evidence=ev, scope="edge-alarm")


def _systemd(src: Sources) -> list[Finding]:
    exe = shutil.which("systemctl")
    if exe is None:
        return [unknown("service.restarts", "no systemctl here", scope="systemd")]
    units = [u for u in UNITS if u != "edge-video" or src.cfg.video.cameras]
    try:
        done = subprocess.run(
            [exe, "show", *units, "-p", PROPERTIES],
            capture_output=True,
            text=True,
            timeout=TOOL_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return [unknown("service.restarts", "systemctl does not answer", scope="systemd")]
    blocks = [b for b in done.stdout.strip().split("\n\n") if b.strip()]
    if done.returncode != 0 or len(blocks) != len(units):
        return [
            unknown("service.restarts", "systemd does not run here (a container?)", scope="systemd")
        ]
    found = []
    for unit, block in zip(units, blocks, strict=True):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        found.append(_unit(unit, props))
    return found


def _unit(unit: str, props: dict[str, str]) -> Finding:
    name = "service.restarts"
    try:
        count = int(props.get("NRestarts", "0") or 0)
    except ValueError:
        count = 0
    ev = {
        "restarts": count,
        "active": props.get("ActiveState"),
        "sub": props.get("SubState"),
        "result": props.get("Result"),
        "started": props.get("ExecMainStartTimestamp"),
    }
    if props.get("ActiveState") == "failed" or props.get("SubState") == "auto-restart":
        return fail(
            name,
            f"{unit} is {props.get('SubState')} ({props.get('Result')}) after {count} restart(s)",
            f"`journalctl -u {unit} -n 100` says why; `systemctl restart {unit}`; call a "
            "technician if it fails again",
            evidence=ev,
            scope=unit,
        )
    if count:
        return warn(
            name,
            f"systemd restarted {unit} {count} time(s) since boot (last result: "
            f"{props.get('Result')})",
            f"`journalctl -u {unit} -b | grep -iE 'watchdog|error'` says why; report it if "
            "it goes on",
            evidence=ev,
            scope=unit,
        )
    return ok(
        name,
        f"{unit} {props.get('ActiveState')}, never restarted by systemd since boot",
        evidence=ev,
        scope=unit,
    )
