"""Cameras, from edge-video's status and the journal: up, frame rate and bitrate, picture
health (frozen, covered, defocused, turned, no signal), pre-alarm buffer and last clip.

edge-video publishes its status (``edge/video/status``, retained) when a camera goes up or
down and every 30 s; camera faults reach the journal at once (edge-alarm journals
``camera_fault`` / ``camera_fault_restore`` as edge-video reports them). So for a fault that
changed in the last ``STATUS_LAG_S`` the journal is the fresher source, and after that the
status (which also drops faults of a previous edge-video run).

Fields read from each camera of edge-video's status (``cameras.<id>``), each optional:
``up``, ``reason``, ``health`` (active faults), ``ring_s`` (published today); ``fps`` and
``kbps`` — the frame rate and bitrate measured over the last seconds (not published yet:
``unknown`` until they are).
"""

from __future__ import annotations

from typing import Any

from edge.config.video import Camera
from edge.diag.checks import journal_view
from edge.diag.checks.common import duration, number, video_status, why_no_video
from edge.diag.model import Finding, fail, ok, unknown, warn
from edge.diag.registry import check
from edge.diag.sources import Sources

STATUS_LAG_S = 35.0  # edge-video republishes its status at least every 30 s
FPS_WARN = 0.7  # measured below this fraction of the configured rate
ENCODED = ("synthetic", "v4l2", "picamera2")  # sources whose fps we set (and encode)
RING_SHORT = 0.8  # pre-alarm buffer below this fraction of video.clips.pre_s
FAULTS = {  # fault → (words, is it a failure, what to do)
    "signal_loss": ("no picture", True, "check the camera's power and cable (PoE switch)"),
    "frozen": (
        "picture frozen",
        True,
        "restart the camera (power cycle); if it freezes "
        "again, call a technician: the camera or its encoder is failing",
    ),
    "covered": (
        "covered or black",
        True,
        "look at the camera: something covers it, or its IR light is dead at night; uncover it",
    ),
    "scene_change": (
        "turned away or displaced",
        True,
        "re-aim the camera to its view; "
        "call a technician to relearn it if the new view is intended",
    ),
    "defocus": ("out of focus", False, "clean the lens (rain, dust, spider web) or refocus"),
}


def _cameras(src: Sources) -> tuple[dict[str, Any] | None, str]:
    """edge-video's cameras (None when it does not run), and why not in words."""
    status = video_status(src)
    cams = (status or {}).get("cameras")
    return (cams if isinstance(cams, dict) else None), why_no_video(src)


@check("camera.video", holdoff_s=30, about="each camera: up, frame rate and bitrate")
def video(src: Sources) -> list[Finding]:
    cams, why = _cameras(src)
    if cams is None:
        return [
            unknown("camera.video", f"cannot tell: {why}", scope=c.id)
            for c in src.cfg.video.cameras
        ]
    return [_video(c, cams.get(c.id)) for c in src.cfg.video.cameras]


def _video(cam: Camera, state: Any) -> Finding:
    name, scope = "camera.video", cam.id
    if not isinstance(state, dict):
        return fail(
            name,
            f"camera {cam.id}: edge-video does not run it",
            "restart edge-video; `journalctl -u edge-video -n 50` says why",
            scope=scope,
        )
    fps, kbps = number(state.get("fps")), number(state.get("kbps"))
    ev: dict[str, Any] = {"source": cam.source, "fps_configured": cam.fps}
    if fps is not None:
        ev["fps"] = round(fps, 1)
    if kbps is not None:
        ev["kbps"] = round(kbps)
    if state.get("up") is None:
        return warn(
            name,
            f"camera {cam.id}: still opening",
            "wait a few seconds; if it stays so, check its address and credentials",
            evidence=ev,
            scope=scope,
        )
    if not state.get("up"):
        reason = str(state.get("reason") or "no reason given")
        return fail(
            name,
            f"camera {cam.id} ({cam.name or cam.source}) lost: {reason}",
            "check the camera's power and network cable, then its address "
            f"(video.cameras {cam.id}); edge-video reconnects by itself",
            evidence=ev,
            scope=scope,
        )
    if fps is None or kbps is None:
        return ok(
            name,
            f"camera {cam.id} up (edge-video does not report its frame rate)",
            evidence=ev,
            scope=scope,
        )
    words = f"camera {cam.id} up, {fps:.1f} fps, {kbps:.0f} kb/s"
    if kbps <= 0 or fps <= 0:
        return fail(
            name,
            f"camera {cam.id} up but sends nothing",
            "restart the camera (power cycle), then edge-video",
            evidence=ev,
            scope=scope,
        )
    if cam.source in ENCODED and fps < FPS_WARN * cam.fps:
        return warn(
            name,
            f"{words}: below the {cam.fps} fps configured",
            "the box cannot keep up: see system.load; lower this camera's fps or resolution",
            evidence=ev,
            scope=scope,
        )
    return ok(name, words, evidence=ev, scope=scope)


@check("camera.health", holdoff_s=10, about="each camera: frozen, covered, defocused, turned")
def health(src: Sources) -> list[Finding]:
    cams, why = _cameras(src)
    if cams is None:
        return [
            unknown("camera.health", f"cannot tell: {why}", scope=c.id)
            for c in src.cfg.video.cameras
        ]
    try:
        recent = _journaled(src)
    except journal_view.JournalUnreadable:
        recent = {}
    found = []
    for cam in src.cfg.video.cameras:
        state = cams.get(cam.id)
        listed = state.get("health") if isinstance(state, dict) else None
        if not isinstance(state, dict) or not state.get("up") or not isinstance(listed, list):
            found.append(
                unknown("camera.health", f"camera {cam.id}: no picture to judge", scope=cam.id)
            )
            continue
        active = {str(f) for f in listed}
        for (cid, fault), (raised, age) in recent.items():
            if cid == cam.id and age < STATUS_LAG_S:
                (active.add if raised else active.discard)(fault)
        found.append(_health(cam, active))
    return found


def _journaled(src: Sources) -> dict[tuple[str, str], tuple[bool, float]]:
    """(camera, fault) → (raised?, age in s) of the last journaled change."""
    out: dict[tuple[str, str], tuple[bool, float]] = {}
    for row in journal_view.recent(src, "camera_fault", "camera_fault_restore"):
        key = (str(row.details.get("camera")), str(row.details.get("fault")))
        out[key] = (row.kind == "camera_fault", max(0.0, src.now - row.ts))
    return out


def _health(cam: Camera, active: set[str]) -> Finding:
    name, scope = "camera.health", cam.id
    ev = {"faults": sorted(active)}
    known = [f for f in FAULTS if f in active]
    if not known:
        if active:
            return warn(
                name,
                f"camera {cam.id}: {', '.join(sorted(active))}",
                "look at the camera's picture (live view)",
                evidence=ev,
                scope=scope,
            )
        return ok(name, f"camera {cam.id}: picture healthy", evidence=ev, scope=scope)
    words = ", ".join(FAULTS[f][0] for f in known)
    remedy = FAULTS[known[0]][2]
    if any(FAULTS[f][1] for f in known):
        return fail(name, f"camera {cam.id}: {words}", remedy, evidence=ev, scope=scope)
    return warn(name, f"camera {cam.id}: {words}", remedy, evidence=ev, scope=scope)


@check("camera.recording", holdoff_s=60, about="each camera: pre-alarm buffer and last clip")
def recording(src: Sources) -> list[Finding]:
    status = video_status(src)
    cams, why = _cameras(src)
    if cams is None or status is None:
        return [
            unknown("camera.recording", f"cannot tell: {why}", scope=c.id)
            for c in src.cfg.video.cameras
        ]
    try:
        clips = {str(r.details.get("camera")): r for r in journal_view.recent(src, "clip_saved")}
    except journal_view.JournalUnreadable:
        clips = {}
    uptime = number(status.get("uptime_s")) or 0.0
    pre_s = src.cfg.video.clips.pre_s
    found = []
    for cam in src.cfg.video.cameras:
        state = cams.get(cam.id)
        ring = number(state.get("ring_s")) if isinstance(state, dict) else None
        ev: dict[str, Any] = {"pre_s": pre_s}
        if ring is not None:
            ev["ring_s"] = ring
        last = clips.get(cam.id)
        tail = " no clip in the recent journal"
        if last is not None:
            age = max(0.0, src.now - last.ts)
            ev["last_clip"] = last.details.get("clip_id")
            ev["last_clip_age_s"] = round(age)
            tail = f" last clip {duration(age)} ago"
        if not isinstance(state, dict) or not state.get("up") or ring is None:
            found.append(
                unknown(
                    "camera.recording",
                    f"camera {cam.id}: not recording;{tail}",
                    evidence=ev,
                    scope=cam.id,
                )
            )
            continue
        settled = uptime > pre_s + 2 * cam.gop_s + 5
        if settled and pre_s > 0 and ring < RING_SHORT * pre_s:
            found.append(
                warn(
                    "camera.recording",
                    f"camera {cam.id}: the pre-alarm buffer holds {ring:.1f} s of the {pre_s:g} s "
                    "configured",
                    "the camera's bitrate is too high for video.clips.ring_max_mb: raise it, or "
                    "lower the camera's bitrate",
                    evidence=ev,
                    scope=cam.id,
                )
            )
            continue
        kept = f"{ring:.1f} s before an alarm" if settled else "pre-alarm buffer filling"
        found.append(
            ok(
                "camera.recording",
                f"camera {cam.id}: {kept};{tail}",
                evidence=ev,
                scope=cam.id,
            )
        )
    return found
