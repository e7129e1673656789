"""Transmission to the central station: heartbeat, what each path still owes, the DC-09 paths.

Sources, freshest first: edge-alarm's status (``edge/alarm/status``) while it runs; the outbox
file and the journal on disk when it does not (both read-only: only edge-alarm writes them).

Fields read from edge-alarm's status, each optional so an older edge-alarm gives ``unknown``
instead of a wrong answer (docs/protocol.md, diagnostics):

- ``outbox``: ``{transport: {depth, oldest_s, rejected}}`` (published today);
- ``heartbeat``: ``{interval_s, last_ts}`` — when the box broker last took a heartbeat;
- ``central``: ``{last_ack_ts}`` — when the central station last acknowledged an event;
- ``dc09``: ``{current, paths: {name: {receiver, up, last_ack_ts, naks, duhs, offset_s,
  fault}}}`` — per receiver path: its state, last ACK, NAK and DUH counts since start, the
  clock offset learnt from its NAKs, and why its last message failed.

Thresholds: a backlog whose oldest event waits ``BACKLOG_WARN_S`` is a warning and
``BACKLOG_FAIL_S`` a failure (as is an outbox 90 % full); a heartbeat older than two
intervals is a warning and five a failure; a receiver clock off by ``CLOCK_WARN_S`` or more
is a warning.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from edge.diag.checks import journal_view
from edge.diag.checks.common import alarm_status, duration, epoch, number, why_no_alarm
from edge.diag.model import Finding, fail, ok, unknown, warn
from edge.diag.registry import check
from edge.diag.sources import Sources

BACKLOG_WARN_S = 300.0
BACKLOG_FAIL_S = 1800.0
OUTBOX_FULL = 0.9  # of outbox.max_rows
HEARTBEAT_WARN, HEARTBEAT_FAIL = 2, 5  # intervals
CLOCK_WARN_S = 30
DUH_WINDOW_S = 86_400  # refusals counted over the last day
OUTBOX_FILE = "outbox.db"  # edge.uplink.outbox_schema.OUTBOX_FILE (a test keeps them equal)
PATHS = ("primary", "secondary", "backup")


def _transports(src: Sources) -> list[str]:
    cfg = src.cfg
    out = []
    if cfg.central is not None and cfg.central.enabled:
        out.append("mqtt")
    if cfg.dc09 is not None and cfg.dc09.enabled:
        out.append("dc09")
    return out


# -- heartbeat ------------------------------------------------------------------------------------
@check("central.heartbeat", holdoff_s=30, about="age of the last heartbeat sent to the station")
def heartbeat(src: Sources) -> list[Finding]:
    if "mqtt" not in _transports(src):
        return []
    name = "central.heartbeat"
    status = alarm_status(src)
    if status is None:
        return [unknown(name, f"cannot tell: {why_no_alarm(src)}")]
    beat = status.get("heartbeat")
    beat = beat if isinstance(beat, dict) else {}
    interval = number(beat.get("interval_s")) or float(src.cfg.heartbeat.interval_s)
    last = epoch(beat.get("last_ts"))
    if last is None:
        return [unknown(name, "edge-alarm does not report its heartbeat (update edge)")]
    age = max(0.0, src.now - last)
    ev = {"age_s": round(age, 1), "interval_s": interval}
    words = f"last heartbeat {duration(age)} ago (every {duration(interval)})"
    remedy = (
        "edge-alarm's heartbeat has stopped: `systemctl restart edge-alarm`; if it stays "
        "silent, call a technician with `journalctl -u edge-alarm -n 100`"
    )
    if age > HEARTBEAT_FAIL * interval:
        return [fail(name, words, remedy, evidence=ev)]
    if age > HEARTBEAT_WARN * interval:
        return [warn(name, words, remedy, evidence=ev)]
    return [ok(name, words, evidence=ev)]


# -- outbox ---------------------------------------------------------------------------------------
@check("outbox.backlog", holdoff_s=60, about="events each path still owes, and the oldest")
def backlog(src: Sources) -> list[Finding]:
    transports = _transports(src)
    if not transports:
        return []
    status = alarm_status(src)
    stats: dict[str, Any] | None = None
    origin = "edge-alarm"
    if status is not None and isinstance(status.get("outbox"), dict):
        stats = status["outbox"]
    else:
        try:
            stats, origin = _outbox_file(src, transports), "the outbox file"
        except OSError as exc:
            return [
                unknown("outbox.backlog", f"cannot read the outbox: {exc}", scope=t)
                for t in transports
            ]
    central = (status or {}).get("central")
    last_ack = epoch(central.get("last_ack_ts")) if isinstance(central, dict) else None
    return [_backlog(src, t, stats.get(t), origin, last_ack) for t in transports]


def _backlog(
    src: Sources, transport: str, stats: Any, origin: str, last_ack: float | None
) -> Finding:
    name = "outbox.backlog"
    if not isinstance(stats, dict):
        return unknown(name, f"{origin} reports no outbox for {transport}", scope=transport)
    depth = int(number(stats.get("depth")) or 0)
    oldest = number(stats.get("oldest_s"))
    ev: dict[str, Any] = {"depth": depth, "age_s": round(oldest or 0.0, 1), "from": origin}
    for key in ("rejected", "oldest_seq"):
        if number(stats.get(key)):
            ev[key] = int(stats[key])
    if transport == "mqtt" and last_ack is not None:
        ev["last_ack_age_s"] = round(max(0.0, src.now - last_ack), 1)
    path = "the central station" if transport == "mqtt" else "the alarm receiver"
    if depth == 0 or oldest is None:
        return ok(name, f"nothing waits for {path}", evidence=ev, scope=transport)
    words = f"{depth} event(s) wait for {path}, the oldest for {duration(oldest)}"
    remedy = (
        "they leave by themselves when the link is back: see central.link and central.bridge"
        if transport == "mqtt"
        else "they leave by themselves when a receiver answers: see dc09.path"
    )
    full = depth >= OUTBOX_FULL * src.cfg.outbox.max_rows
    if full:
        remedy += "; the outbox is nearly full: the oldest low-priority events will be dropped"
    if oldest >= BACKLOG_FAIL_S or full:
        return fail(name, words, remedy, evidence=ev, scope=transport)
    if oldest >= BACKLOG_WARN_S:
        return warn(name, words, remedy, evidence=ev, scope=transport)
    return ok(name, words, evidence=ev, scope=transport)


def _outbox_file(src: Sources, transports: list[str]) -> dict[str, Any]:
    """Depth and oldest event per transport, from the file (read-only, edge-alarm down)."""
    path = Path(src.cfg.paths.data_dir) / OUTBOX_FILE
    if not path.exists():
        raise FileNotFoundError(f"no outbox at {path} yet (edge-alarm creates it)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.2)
        try:
            rows = db.execute(
                "SELECT transport, COUNT(*), MIN(ts), MIN(seq) FROM pending GROUP BY transport"
            ).fetchall()
            rejected = dict(
                db.execute("SELECT transport, COUNT(*) FROM rejected GROUP BY transport")
            )
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise OSError(f"{path}: {exc}") from exc
    found = {t: (n, first, seq) for t, n, first, seq in rows}
    out: dict[str, Any] = {}
    for t in transports:
        n, first, seq = found.get(t, (0, None, None))
        oldest = None if first is None else max(0.0, src.now - float(first))
        out[t] = {"depth": n, "oldest_s": oldest, "oldest_seq": seq, "rejected": rejected.get(t, 0)}
    return out


# -- DC-09 paths ----------------------------------------------------------------------------------
@check("dc09.path", holdoff_s=30, about="each DC-09 receiver path: up, last ACK, NAK/DUH, clock")
def dc09_paths(src: Sources) -> list[Finding]:
    dc09 = src.cfg.dc09
    if dc09 is None or not dc09.enabled:
        return []
    configured = {n: r for n in PATHS if (r := getattr(dc09, n)) is not None}
    status = alarm_status(src)
    published = (status or {}).get("dc09")
    if isinstance(published, dict) and isinstance(published.get("paths"), dict):
        states = {n: _published(published["paths"].get(n)) for n in configured}
    else:
        try:
            states = _journaled(src, list(configured))
        except journal_view.JournalUnreadable as exc:
            return [unknown("dc09.path", f"cannot tell: {exc}", scope=n) for n in configured]
    down = [n for n in configured if states[n].get("up") is False]
    every_path_down = len(down) == len(configured)
    return [_path(src, n, str(configured[n]), states[n], every_path_down) for n in configured]


def _published(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return {"from": "edge-alarm"}
    out = {k: entry.get(k) for k in ("up", "fault", "naks", "duhs", "offset_s")}
    out["last_ack"] = epoch(entry.get("last_ack_ts"))
    out["from"] = "edge-alarm"
    return out


def _journaled(src: Sources, paths: list[str]) -> dict[str, dict[str, Any]]:
    """Path states from the journal: the last receiver_path_fail / _restore of each path, and
    the events each receiver refused (DUH) over the last day. No ACK time nor NAK count:
    edge-alarm journals neither."""
    states: dict[str, dict[str, Any]] = {p: {"from": "the journal"} for p in paths}
    rows = journal_view.recent(
        src, "receiver_path_fail", "receiver_path_restore", "transmission_rejected"
    )
    for row in rows:
        if row.kind == "transmission_rejected":
            who = row.details.get("receiver")
            if who in states and src.now - row.ts <= DUH_WINDOW_S:
                states[who]["duhs"] = int(states[who].get("duhs") or 0) + 1
            continue
        path = row.details.get("path")
        if path not in states:
            continue
        failed = row.kind == "receiver_path_fail"
        states[path].update(up=not failed, since=row.ts)
        states[path]["fault"] = str(row.details.get("reason") or "") if failed else ""
    return states


def _path(
    src: Sources, name: str, receiver: str, state: dict[str, Any], everything_down: bool
) -> Finding:
    check_name = "dc09.path"
    ev: dict[str, Any] = {"receiver": receiver, "from": state.get("from")}
    for key in ("naks", "duhs", "offset_s"):
        if number(state.get(key)) is not None:
            ev[key] = state[key]
    if state.get("last_ack") is not None:
        ev["last_ack_age_s"] = round(max(0.0, src.now - state["last_ack"]), 1)
    since = state.get("since")
    if since is not None:
        ev["age_s"] = round(max(0.0, src.now - since), 1)
    where = f"{name} receiver {receiver}"
    if state.get("up") is False:
        fault = state.get("fault") or "no answer"
        words = f"{where} does not take messages: {fault}"
        if since is not None:
            words += f" (for {duration(src.now - since)})"
        if everything_down:
            return fail(
                check_name,
                words + "; no alarm receiver path works",
                "check the box's network and that the receiver is reachable "
                f"(`timeout 3 bash -c '</dev/tcp/{receiver.replace(':', '/')}'`); call the "
                "monitoring station: their receiver may be down. Events wait in the journal",
                evidence=ev,
                scope=name,
                arming=True,
            )
        return warn(
            check_name,
            words + "; another path carries the events",
            "tell the monitoring station this path is down; check the network it uses",
            evidence=ev,
            scope=name,
        )
    if (offset := number(state.get("offset_s"))) is not None and abs(offset) >= CLOCK_WARN_S:
        return warn(
            check_name,
            f"{where}: its clock and ours differ by {offset:+.0f} s",
            "check the box clock (system.clock, `timedatectl`); if it is right, tell the "
            "monitoring station their receiver's clock is off",
            evidence=ev,
            scope=name,
        )
    if duhs := int(number(state.get("duhs")) or 0):
        return warn(
            check_name,
            f"{where} refused {duhs} event(s) (DUH): it does not accept what we send",
            "call the monitoring station with the account number and `edge events --since "
            "1d`: the account, key or codes do not match their receiver's",
            evidence=ev,
            scope=name,
        )
    if state.get("last_ack") is not None:
        words = f"{where} answers (last ACK {duration(src.now - state['last_ack'])} ago)"
    else:
        words = f"{where}: no failure reported"
    return ok(check_name, words, evidence=ev, scope=name)
