"""Live view over the box bus: grants from edge-alarm, signalling from the central station.

- ``edge/live/grant`` (from edge-alarm, after it verified a signed ``cmd/live`` and checked
  the site's policy): reserve a viewer slot; the answer goes to the request's ``reply``
  topic with the ICE servers the console should use (TURN REST credentials minted per
  session) and how long the session may last.
- ``edge/live/patrol`` (from edge-alarm, after a verified ``cmd/patrol``): a snapshot of
  every camera, published once on ``edge/up/patrol/<nonce>``.
- ``edge/down/live/<session>/offer | ice | bye`` (from the central station over the
  bridge): the answer goes to ``edge/up/live/<session>/answer``; a refused offer, or a
  session the box ends, is told on ``edge/up/live/<session>/bye`` with a code and a reason.
"""

from __future__ import annotations

import logging
from typing import Any

from edge.bus import Bus, Message
from edge.errors import BusError, CommandError
from edge.uplink.topics import DOWN_LIVE_ALL, up, up_live
from edge.video.live.api import LiveRefused
from edge.video.live.hub import HUNG_UP, LiveHub
from edge.video.live.patrol import patrol_report

log = logging.getLogger(__name__)

GRANT = "edge/live/grant"
PATROL = "edge/live/patrol"
REPLY_BASE = "edge/live/reply"  # where edge-alarm waits for answers
PUBLISH_S = 5.0


class LiveSignalling:
    """The bus side of the hub; its loops are supervised by edge-video."""

    def __init__(self, hub: LiveHub, bus: Bus, cameras: Any) -> None:
        self.hub = hub
        self.bus = bus
        self.cameras = cameras  # camera id -> pipeline (for patrol snapshots)
        hub.on_end = self.ended

    def loops(self) -> dict[str, Any]:
        return {
            "live-grants": self.grants(),
            "live-signalling": self.signalling(),
            "live-patrol": self.patrols(),
        }

    # -- grants ------------------------------------------------------------------------------
    async def grants(self) -> None:
        async for msg in self.bus.subscribe(GRANT):
            req = _request(msg)
            if req is None:
                continue
            answer = self.grant(req)
            await self._publish(str(req["reply"]), answer)

    def grant(self, req: dict[str, Any]) -> dict[str, Any]:
        session = str(req.get("session", ""))
        try:
            live = self.hub.grant(
                session=session,
                camera=str(req.get("camera", "")),
                operator=str(req.get("operator", "")),
                reason=str(req.get("reason", "")),
                via="central",
            )
        except LiveRefused as exc:
            return {"v": 1, "ok": False, "code": exc.code, "reason": exc.reason}
        return {
            "v": 1,
            "ok": True,
            "session": session,
            "camera": live.grant.camera,
            "ice_servers": live.servers,
            "max_session_s": self.hub.live.max_session_s,
            "idle_timeout_s": self.hub.live.idle_timeout_s,
            "audio": {
                "listen_in": self.hub.live.audio.listen_in,
                "talk_down": self.hub.live.audio.talk_down,
            },
            "actions": list(self.hub.live.actions.outputs),
        }

    # -- signalling --------------------------------------------------------------------------
    async def signalling(self) -> None:
        async for msg in self.bus.subscribe(DOWN_LIVE_ALL):
            parts = msg.topic.split("/")
            if len(parts) != 5:
                continue
            session, kind = parts[3], parts[4]
            try:
                body = msg.json()
            except CommandError as exc:
                await self._bye(session, "bad_offer", f"not JSON: {exc}")
                continue
            if not isinstance(body, dict):
                await self._bye(session, "bad_offer", "a signalling message is a JSON object")
                continue
            await self._signal(session, kind, body)

    async def _signal(self, session: str, kind: str, body: dict[str, Any]) -> None:
        if kind == "offer":
            try:
                sdp = await self.hub.offer(session, str(body.get("sdp", "")))
            except LiveRefused as exc:
                await self._bye(session, exc.code, exc.reason)
                return
            await self._publish(
                up_live(session, "answer"),
                {"v": 1, "session": session, "type": "answer", "sdp": sdp},
            )
        elif kind == "ice":
            live = self.hub.sessions.get(session)
            if live is not None:
                try:
                    await live.add_candidate(body)
                except (ValueError, IndexError) as exc:
                    log.info("live session %s: bad ICE candidate ignored: %s", session, exc)
        elif kind == "bye":
            await self.hub.close(session, HUNG_UP)

    async def _bye(self, session: str, code: str, reason: str) -> None:
        body = {"v": 1, "session": session, "code": code, "reason": reason}
        await self._publish(up(f"live/{session}/bye"), body)

    async def ended(self, session: str, why: str) -> None:
        """Tell the central console a session the box closed (timeouts, shutdown)."""
        await self._bye(session, "ended", why)

    # -- patrol ------------------------------------------------------------------------------
    async def patrols(self) -> None:
        async for msg in self.bus.subscribe(PATROL):
            req = _request(msg)
            if req is None:
                continue
            nonce = str(req.get("nonce", ""))
            camera = req.get("camera") or None
            try:
                report = await patrol_report(self.cameras, camera, nonce, str(req.get("operator")))
            except LiveRefused as exc:
                await self._publish(
                    str(req["reply"]), {"v": 1, "ok": False, "code": exc.code, "reason": exc.reason}
                )
                continue
            topic = up(f"patrol/{nonce}")
            await self._publish(topic, report)
            shots = sum(1 for c in report["cameras"] if c.get("jpeg"))
            answer = {
                "v": 1,
                "ok": True,
                "topic": f"patrol/{nonce}",
                "cameras": len(report["cameras"]),
                "snapshots": shots,
            }
            await self._publish(str(req["reply"]), answer)

    async def _publish(self, topic: str, body: dict[str, Any]) -> None:
        try:
            await self.bus.publish(topic, body, timeout=PUBLISH_S)
        except BusError as exc:
            log.warning("live: %s not published: %s", topic, exc)


def _request(msg: Message) -> dict[str, Any] | None:
    """A request from edge-alarm: a JSON object with a reply topic under edge/live/reply."""
    try:
        req = msg.json()
    except CommandError as exc:
        log.warning("ignored a malformed request on %s: %s", msg.topic, exc)
        return None
    reply = req.get("reply") if isinstance(req, dict) else None
    if not isinstance(reply, str) or not reply.startswith(REPLY_BASE + "/"):
        log.warning("ignored a request on %s without a reply topic under %s", msg.topic, REPLY_BASE)
        return None
    return dict(req)
