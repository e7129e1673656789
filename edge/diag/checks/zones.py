"""Zones and outputs, from edge-alarm: loops out of band, tampered, bypassed, swinger-locked,
with the loop's ohms against its configured bands; outputs whose read-back disagrees.

Each zone and each output is its own finding (scope = its id), ok ones included, so the
installer page can show every loop's resistance next to its bands. Sources: edge-alarm's
status (``panel.zones``: loop state, bypass and why; ``outputs``: commanded state and pin
read-back) and each zone's retained state (``edge/zones/<id>/state``: volts and ohms).
"""

from __future__ import annotations

from typing import Any

from edge.config.models import AdcInput, Zone
from edge.diag.checks import journal_view
from edge.diag.checks.common import alarm_status, number, why_no_alarm
from edge.diag.model import Finding, Status, fail, ok, unknown, warn
from edge.diag.registry import check
from edge.diag.sources import Sources

BURGLARY = ("instant", "delayed")  # an open loop is a door open, not a fault
SWINGER = "swinger"  # edge.alarm.zones.BYPASS_SWINGER
SINCE_KINDS = ("loop_fault", "fire_loop_fault", "tamper", "bypass", "swinger_shutdown")


@check("zone.loop", holdoff_s=10, about="each zone: loop in band, not tampered, bypassed, locked")
def loops(src: Sources) -> list[Finding]:
    if not src.cfg.zones:
        return []
    status = alarm_status(src)
    panel = (status or {}).get("panel")
    zones = panel.get("zones") if isinstance(panel, dict) else None
    if not isinstance(zones, dict):
        why = why_no_alarm(src) if status is None else "edge-alarm reports no zones"
        return [unknown("zone.loop", f"cannot tell: {why}", scope=z.id) for z in src.cfg.zones]
    since = _since(src)
    found = []
    for z in src.cfg.zones:
        finding = _zone(z, zones.get(z.id), src.zones.get(z.id) or {})
        if finding.status > Status.OK and z.id in since:  # how long: the journal knows
            age = round(max(0.0, src.now - since[z.id]), 1)
            finding = finding.with_(evidence={**finding.evidence, "age_s": age})
        found.append(finding)
    return found


def _since(src: Sources) -> dict[str, float]:
    """When each zone's latest fault, tamper, bypass or swinger shutdown was journaled."""
    try:
        rows = journal_view.recent(src, *SINCE_KINDS)
    except journal_view.JournalUnreadable:
        return {}
    return {r.zone: r.ts for r in rows if r.zone}


def _zone(zone: Zone, state: Any, reading: dict[str, Any]) -> Finding:
    name, scope = "zone.loop", zone.id
    if not isinstance(state, dict):
        return unknown(name, f"edge-alarm reports nothing on zone {zone.id}", scope=scope)
    label = f"{zone.id} ({zone.label})" if zone.label != zone.id else zone.id
    loop = str(state.get("loop"))
    ohms = number(reading.get("ohms"))
    ev: dict[str, Any] = {"loop": loop, "type": zone.type}
    bands = ""
    if isinstance(zone.input, AdcInput):
        ev["bands"] = {
            b.state.value: [round(b.low), None if b.high == float("inf") else round(b.high)]
            for b in zone.input.model().bands
        }
        normal = ev["bands"]["normal"]
        bands = f"; normal is {normal[0]}–{normal[1]} Ω"
        if ohms is not None:
            ev["ohms"] = round(ohms)
        elif reading.get("ohms", 0) is None:  # published as null: an open loop (infinite)
            ev["ohms"] = "open"
    reads = f"reads {ev['ohms']} Ω" if isinstance(ev.get("ohms"), int) else "reads open"
    measured = f" ({reads}{bands})" if "ohms" in ev else ""
    if loop == "fault":
        return fail(
            name,
            f"zone {label}: loop out of band{measured}",
            "a bad joint, a wrong or damaged resistor or a partial short: measure the loop at "
            "the terminals with the detector at rest; call a technician if it stays",
            evidence=ev,
            scope=scope,
            arming=True,
        )
    if loop in ("tamper_short", "tamper_cut"):
        what = "short-circuited" if loop == "tamper_short" else "cut"
        return fail(
            name,
            f"zone {label}: loop {what} (tamper){measured}",
            "inspect the cable and the detector's cover for sabotage or damage; the tamper "
            "alarm was sent to the station",
            evidence=ev,
            scope=scope,
            arming=True,
        )
    if state.get("bypassed"):
        why = str(state.get("bypass_reason") or "manual")
        ev["bypass"] = why
        if why == SWINGER:
            return warn(
                name,
                f"zone {label}: shut down after {state.get('swinger_count')} alarms (swinger)",
                "find why it keeps alarming (detector, draught, animal); disarming brings it "
                "back, `edge panel unbypass` sooner",
                evidence=ev,
                scope=scope,
            )
        return warn(
            name,
            f"zone {label}: bypassed ({why}): it does not protect",
            f"`edge panel unbypass {zone.id}` once the reason is fixed",
            evidence=ev,
            scope=scope,
        )
    if loop == "alarm" and zone.type not in (*BURGLARY, "keyswitch"):
        return warn(
            name,
            f"zone {label}: {zone.type.replace('_', ' ')} zone in alarm now{measured}",
            "the alarm was sent; see `edge panel status` and attend to its cause",
            evidence=ev,
            scope=scope,
        )
    words = "open" if loop == "alarm" else loop
    return ok(name, f"zone {label}: {words}{measured}", evidence=ev, scope=scope)


@check("output.readback", holdoff_s=10, about="each output: the pin reads what was commanded")
def outputs(src: Sources) -> list[Finding]:
    if not src.cfg.outputs:
        return []
    status = alarm_status(src)
    states = (status or {}).get("outputs")
    if not isinstance(states, dict):
        why = why_no_alarm(src) if status is None else "edge-alarm reports no outputs"
        return [
            unknown("output.readback", f"cannot tell: {why}", scope=o.id) for o in src.cfg.outputs
        ]
    found = []
    for out in src.cfg.outputs:
        state = states.get(out.id)
        if not isinstance(state, dict) or "readback" not in state:
            found.append(unknown("output.readback", "no read-back reported", scope=out.id))
            continue
        on, back = bool(state.get("on")), bool(state.get("readback"))
        ev = {"on": on, "readback": back}
        word = "on" if on else "off"
        if on != back:
            found.append(
                fail(
                    "output.readback",
                    f"output {out.id} commanded {word} but its pin reads {'on' if back else 'off'}",
                    "a stuck relay, a wiring fault or a damaged driver: call a technician "
                    f"(output {out.id}, GPIO {out.pin})",
                    evidence=ev,
                    scope=out.id,
                )
            )
        else:
            found.append(
                ok("output.readback", f"output {out.id} {word}", evidence=ev, scope=out.id)
            )
    return found
