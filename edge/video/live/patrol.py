"""Video patrol ("ronde vidéo"): one report with the latest picture of every camera.

The picture comes from each camera's pre-alarm ring — its newest frame, decoded from the
newest keyframe — so a patrol costs no extra capture and answers within a GOP's decoding
time, even for a camera nobody is watching. A camera without video is in the report too,
with the reason, so the operator sees the whole site in one message.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from typing import Any

from edge.errors import EdgeError
from edge.tasks import within
from edge.video.camera import wall_iso
from edge.video.clips import snapshot_jpeg
from edge.video.live.api import LiveRefused

SNAPSHOT_S = 10.0  # per camera; a slower decode is reported as an error, not waited for


async def patrol_report(
    cameras: Mapping[str, Any], camera: str | None, nonce: str, operator: str
) -> dict[str, Any]:
    """``{"v", "nonce", "operator", "ts", "cameras": [...]}``; LiveRefused for a bad camera."""
    if camera is not None and camera not in cameras:
        known = ", ".join(sorted(cameras)) or "none"
        raise LiveRefused("unknown_camera", f"no camera {camera!r} here (cameras: {known})")
    chosen = [camera] if camera else list(cameras)
    shots = await asyncio.gather(*(_snapshot(cid, cameras[cid]) for cid in chosen))
    return {
        "v": 1,
        "nonce": nonce,
        "operator": operator,
        "ts": wall_iso(time.time()),
        "cameras": list(shots),
    }


async def _snapshot(cid: str, pipeline: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "camera": cid,
        "name": pipeline.cam.name or cid,
        "up": pipeline.up,
        "jpeg": None,
    }
    gop = pipeline.ring.latest_keyframe_gop()
    if not gop:
        entry["error"] = f"no video held ({pipeline.reason})"
        return entry
    try:
        jpeg = await within(asyncio.to_thread(snapshot_jpeg, gop, gop[-1].seconds), SNAPSHOT_S)
    except (EdgeError, TimeoutError) as exc:
        entry["error"] = str(exc) or "snapshot took too long"
        return entry
    entry["ts"] = wall_iso(pipeline.clock.wall(gop[-1].seconds)) if pipeline.clock.known else None
    entry["jpeg"] = base64.b64encode(jpeg).decode("ascii")
    entry["bytes"] = len(jpeg)
    return entry
