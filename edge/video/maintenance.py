"""edge-video's side of remote maintenance, and the diagnostics report its web server shows.

edge-alarm carries out a central maintainer's signed command (edge.alarm.remedies) and asks
here, on ``edge/remedy/video`` — a topic only edge-alarm may write (the broker's ACL) — to:

- ``restart``: answer, then stop cleanly (clips being recorded are written); systemd starts
  edge-video again (Restart=always). edge-alarm, another user, could not signal us itself.
- ``reconnect`` a camera: close its source and open it again at once, without waiting out
  the reconnection backoff (a camera whose file ended, an RTSP camera rebooted); answer once
  the new source delivered something, or say that it has not within ``FIRST_ITEM_S``.

Each camera's reader runs inside :meth:`VideoMaintenance.camera_loop`, which restarts it on
a new source when asked; a reader that fails still fails the service as before.

The retained diagnostics report (``edge/diag/report``, edge-alarm's) is kept for the local
web server's ``/api/diag`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from edge.bus.topics import topic_id
from edge.diag.topics import REPORT, VIDEO_REPLY, VIDEO_REQUEST
from edge.errors import BusError, CommandError
from edge.tasks import within

log = logging.getLogger(__name__)

FIRST_ITEM_S = 10.0  # a reopened camera must deliver within this for a "reconnected" answer
RESTART_DELAY_S = 0.5  # after the answer left
ANSWER_S = 5.0


class VideoMaintenance:
    """``service``: the VideoService (its cameras, bus and stop event)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.report: dict[str, Any] | None = None
        self._asks: dict[str, asyncio.Event] = {}
        self._reopened: dict[str, asyncio.Event] = {}

    def loops(self) -> dict[str, Any]:
        return {"maintenance": self.requests(), "diag_report": self.follow_report()}

    def latest_report(self) -> dict[str, Any] | None:
        return self.report

    # -- the diagnostics report ---------------------------------------------------------------
    async def follow_report(self) -> None:
        async for msg in self.service.bus.subscribe(REPORT, maxsize=4):
            try:
                body = msg.json()
            except CommandError:
                continue
            if isinstance(body, dict):
                self.report = body

    # -- requests from edge-alarm ---------------------------------------------------------------
    async def requests(self) -> None:
        async for msg in self.service.bus.subscribe(VIDEO_REQUEST, maxsize=8):
            try:
                req = msg.json()
                reply = req.get("reply") if isinstance(req, dict) else None
                if not isinstance(reply, str) or not reply.startswith(VIDEO_REPLY + "/"):
                    raise CommandError(f"a request without a reply topic under {VIDEO_REPLY}")
                topic_id(reply[len(VIDEO_REPLY) + 1 :], "reply token")
            except CommandError as exc:
                log.warning("ignored a maintenance request: %s", exc)
                continue
            answer = await self._carry_out(req)
            try:
                await self.service.bus.publish(reply, {"v": 1, **answer}, timeout=ANSWER_S)
            except BusError as exc:
                log.warning("maintenance answer not sent: %s", exc)
            if answer.get("restarting"):
                asyncio.get_running_loop().call_later(RESTART_DELAY_S, self.service.stop.set)

    async def _carry_out(self, req: dict[str, Any]) -> dict[str, Any]:
        action, who = req.get("action"), str(req.get("operator") or "?")
        if action == "restart":
            log.warning("restart requested by operator %s (central command): stopping", who)
            return {"ok": True, "restarting": "video"}
        if action == "reconnect":
            camera = req.get("camera")
            if camera not in self.service.cameras:
                known = ", ".join(self.service.cameras) or "none"
                return {"ok": False, "code": "failed", "reason": f"no camera {camera!r} ({known})"}
            log.warning("camera %s: reconnection requested by operator %s", camera, who)
            return await self._reconnect(str(camera))
        return {"ok": False, "code": "failed", "reason": f"unknown maintenance action {action!r}"}

    async def _reconnect(self, camera: str) -> dict[str, Any]:
        started = time.monotonic()
        done = self._reopened.setdefault(camera, asyncio.Event())
        done.clear()
        self._ask(camera).set()
        try:
            await within(done.wait(), FIRST_ITEM_S)
            cam = self.service.cameras[camera]
            await within(cam.first_item.wait(), FIRST_ITEM_S)
        except TimeoutError:
            return {
                "ok": False,
                "code": "failed",
                "reason": f"camera {camera} was reopened but delivered nothing within "
                f"{FIRST_ITEM_S:.0f} s: check its power and network, then its URL",
            }
        cam = self.service.cameras[camera]
        return {
            "camera": camera,
            "reconnected": True,
            "up": cam.up,
            "state": cam.reason,
            "took_ms": round((time.monotonic() - started) * 1000, 1),
        }

    def _ask(self, camera: str) -> asyncio.Event:
        return self._asks.setdefault(camera, asyncio.Event())

    # -- each camera's reader -----------------------------------------------------------------
    async def camera_loop(self, camera: str) -> None:
        """Supervised in place of the camera's reader: runs it, and on a reconnection request
        closes its source and runs it again on a new one."""
        from edge.video.sources.factory import open_source

        cam = self.service.cameras[camera]
        ask = self._ask(camera)
        while True:
            reader = asyncio.create_task(cam.run(), name=f"camera-reader:{camera}")
            asked = asyncio.create_task(ask.wait(), name=f"camera-ask:{camera}")
            try:
                done, _ = await asyncio.wait({reader, asked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, asked):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(reader, asked, return_exceptions=True)
            if reader in done:
                reader.result()  # its failure is the service's, as before
                return
            ask.clear()
            old, cam.source = cam.source, open_source(cam.cam)
            cam.first_item.clear()
            await old.close()
            self._reopened.setdefault(camera, asyncio.Event()).set()
