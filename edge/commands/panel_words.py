"""edge-alarm's answers in words, for `edge panel`: a few lines an installer reads on a phone.

The status dict is edge-alarm's (edge/alarm/service.py ``status()``), read defensively: a
field an older or newer edge-alarm does not send is left out of the words, never a traceback.
edge-alarm keeps the panel's clocks on the monotonic clock; this command runs on the same box
(the same clock, the same boot), so ``time.time() - (time.monotonic() - t)`` is the wall time
of ``t``. Times are printed in the site's zone (edge.sitetime).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from edge.commands.event_words import clean
from edge.sitetime import UTC, SiteZone, local
from edge.words import duration

# Why an output is on, when edge-alarm's status does not say: the journal's last output_on.
WhyOn = Callable[[str, dict[str, Any]], str | None]


def summary(
    answer: dict[str, Any], zone: SiteZone | None = None, why_on: WhyOn | None = None
) -> str:
    """The answer to any `edge panel` action; the whole status when it is one."""
    zone = zone or SiteZone(UTC, "UTC")
    if "panel" in answer:
        return clean_lines(status_lines(answer, zone, why_on))
    if "partition" in answer:
        return clean(partition_line(answer["partition"], None))
    if "zone" in answer:
        return clean(zone_line(answer["zone"], None))
    if "readback" in answer:
        return clean(output_line(str(answer.get("id")), answer, zone, None, None, full=False))
    return json.dumps(answer, indent=2, sort_keys=True)


def clean_lines(lines: list[str]) -> str:
    return "\n".join(clean(line) for line in lines)


def status_lines(answer: dict[str, Any], zone: SiteZone, why_on: WhyOn | None = None) -> list[str]:
    """Service, partitions, zones worth a look, outputs, link and outbox, disk."""
    panel = _dict(answer.get("panel"))
    lines = [_service_line(answer, zone)]
    lines += [partition_line(p, zone) for p in _dict(panel.get("partitions")).values()]
    zones = [z for z in _dict(panel.get("zones")).values() if isinstance(z, dict)]
    lines += [zone_line(z, zone) for z in zones if _worth_a_line(z)]
    siren = _dict(panel.get("siren"))
    for oid, state in sorted(_dict(answer.get("outputs")).items()):
        if isinstance(state, dict):
            lines.append(output_line(oid, state, zone, siren, why_on, full=True))
    lines.append(link_line(answer.get("link")))
    lines += outbox_lines(answer.get("outbox"))
    if isinstance(answer.get("disk"), dict):
        lines.append(disk_summary(answer["disk"], zone))
    return [line for line in lines if line]


def _service_line(answer: dict[str, Any], zone: SiteZone) -> str:
    version = answer.get("version") or "?"
    uptime = answer.get("uptime_s")
    up = ""
    if isinstance(uptime, (int, float)):
        up = f", up {duration(float(uptime), minutes_after_hours=True)}"
    seq = answer.get("journal_seq")
    last = f"; journal at #{seq}" if isinstance(seq, int) else ""
    return (
        f"site {answer.get('site', '?')}: edge-alarm {version}{up}{last} — "
        f"{local(time.time(), zone)} ({zone.describe()})"
    )


def partition_line(p: dict[str, Any], zone: SiteZone | None) -> str:
    text = f"partition {p.get('id')}: {str(p.get('state', '?')).replace('_', ' ')}"
    since = _when(p, "since", zone)
    if since:
        text += f" since {since}"
    deadline = _when(p, "deadline", zone)
    if deadline:
        text += f" (delay ends {deadline})"
    if p.get("entry_zones"):
        text += f"; entry by {', '.join(map(str, p['entry_zones']))}"
    if p.get("open_zones"):
        text += f"; open: {', '.join(map(str, p['open_zones']))}"
    if p.get("bypassed_zones"):
        text += f"; bypassed: {', '.join(map(str, p['bypassed_zones']))}"
    return text


def _worth_a_line(z: dict[str, Any]) -> bool:
    return bool(
        z.get("loop") != "normal"
        or z.get("bypassed")
        or z.get("alarm_memory")
        or z.get("pending_restore")
    )


def zone_line(z: dict[str, Any], zone: SiteZone | None) -> str:
    text = f"zone {z.get('id')}: loop {z.get('loop')}"
    if z.get("bypassed"):
        text += f", bypassed ({z.get('bypass_reason')})"
    changed = _when(z, "last_change", zone)
    if changed and z.get("loop") != "normal":
        text += f" since {changed}"
    memory = [str(m).replace("_", " ") for m in z.get("alarm_memory") or []]
    if memory:
        text += f"; alarm memory: {', '.join(memory)} (until the partition is next armed)"
    if z.get("pending_restore") and z.get("loop") == "normal":
        text += "; its restore is not sent yet"
    return text


def output_line(
    oid: str,
    state: dict[str, Any],
    zone: SiteZone | None,
    siren: dict[str, Any] | None,
    why_on: WhyOn | None,
    *,
    full: bool,
) -> str:
    """One output; ``full`` (the status): ON in capitals, and why it is on."""
    on = bool(state.get("on"))
    text = f"output {oid}: {'ON' if full and on else 'on' if on else 'off'}"
    since = _when(state, "since", zone)
    if on and since:
        text += f" since {since}"
    until = _when(state, "until", zone)
    if on and until:
        text += f" until {until}"
    if on and full:
        why = _why(oid, state, siren, why_on)
        text += f" — {why}" if why else " — why: not known (see `edge events`)"
    if "readback" in state:
        reads = "on" if state.get("readback") else "off"
        text += f" (pin reads {reads})"
        if bool(state.get("readback")) != on:
            text += " — THE PIN DOES NOT FOLLOW: check the relay and its wiring"
    return text


def _why(
    oid: str, state: dict[str, Any], siren: dict[str, Any] | None, why_on: WhyOn | None
) -> str | None:
    """In order: the status's own words, the siren rule, the journal's output_on."""
    reason, user = state.get("reason"), state.get("user")
    if reason or user:
        return " ".join(
            part
            for part in (f"because: {reason}" if reason else "", f"by {user}" if user else "")
            if part
        )
    if siren and siren.get("output") == oid and siren.get("on"):
        parts = ", ".join(map(str, siren.get("partitions") or [])) or "a partition"
        return f"because: the siren rule (an alarm in {parts}; it stops at the bell cut-off)"
    return why_on(oid, state) if why_on is not None else None


def link_line(link: Any) -> str:
    """The bridge to the central station: '1' up, '0' down, None when not bridged or unknown."""
    if isinstance(link, dict):  # a richer form, if edge-alarm ever reports one
        link = link.get("central", link.get("state"))
    if link in ("1", 1, True, "up"):
        return "central station link: up"
    if link in ("0", 0, False, "down"):
        return (
            "central station link: DOWN — events wait in the outbox; `edge diag` says why "
            "(network, certificate, central broker)"
        )
    if link == "unknown":
        return (
            "central station link: not reported yet (the bridge has not connected since the "
            "box broker started; `edge diag` says why)"
        )
    return ""


def outbox_lines(outbox: Any) -> list[str]:
    """Per transport: what waits to be acknowledged, and for how long."""
    if not isinstance(outbox, dict) or not outbox:
        return []
    parts = []
    for transport, stats in sorted(outbox.items()):
        if not isinstance(stats, dict):
            continue
        depth = stats.get("depth") or 0
        text = f"{transport} {depth} waiting"
        oldest = stats.get("oldest_s")
        if depth and isinstance(oldest, (int, float)):
            text += f" (oldest {duration(float(oldest), minutes_after_hours=True)})"
        if stats.get("rejected"):
            text += f", {stats['rejected']} rejected by the receiver"
        parts.append(text)
    return [f"outbox: {'; '.join(parts)}"] if parts else []


def disk_summary(disk: dict[str, Any], zone: SiteZone | None = None) -> str:
    """The data disk in one line; when full, what it means and what to do."""
    free = disk.get("free_bytes")
    room = f"{free / 1e6:.1f} MB free" if isinstance(free, int) and free >= 0 else "free space ?"
    if disk.get("state") != "full":
        return f"data disk: ok, {room}"
    held = disk.get("held") or {}
    since = _when(disk, "since", zone or SiteZone(UTC, "UTC")) or disk.get("since")
    text = (
        f"data disk: FULL since {since} ({room}): alarms still detected and sent; "
        f"{held.get('journal', 0)} event(s) held in memory, not yet in the journal"
    )
    if disk.get("lost"):
        text += f", {disk['lost']} lost (memory bound reached)"
    return text + f" — free space on the disk of {disk.get('path')} (docs/maintenance.md)"


def _when(data: dict[str, Any], key: str, zone: SiteZone | None) -> str | None:
    """``data[key]`` as a time on the site's clock: an ISO text, ``<key>_ts`` when edge-alarm
    sends one, or a monotonic reading of this box."""
    value = data.get(f"{key}_ts") or data.get(key)
    if value is None or value == "" or zone is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:  # the panel's "not since anything" (a fresh start)
            return None
        ago = time.monotonic() - float(value)
        if not -86_400 * 365 < ago < 86_400 * 3650:  # not a reading of this boot's clock
            return None
        return local(time.time() - ago, zone)
    return local(str(value), zone)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
