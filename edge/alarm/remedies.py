"""Safe remote remediation: what a level-1 maintainer may trigger by signed command.

Each action is harmless to the alarm path and bounded in time; the command channel
(edge.uplink.remote) journals each one with the operator, its arguments and its outcome.

- ``restart`` ``{"service": "video"}``: edge-video exits cleanly on edge-alarm's request over
  the box bus and systemd starts it again (Restart=always). edge-alarm runs as another user
  and may not signal edge-video's process; the broker's ACL lets only edge-alarm ask.
- ``camera_reconnect`` ``{"camera": id}``: edge-video closes that camera's source and opens
  it again at once (no wait for the reconnection backoff); it answers once the camera
  delivered again, or says it did not within its bound.
- ``dc09_test``: one NULL supervision message on the DC-09 paths (current path first, then
  the others), one try each; a path that answers again ends the outage at once.
- ``outbox_flush``: retry everything owed now — the MQTT sender starts a new pass from the
  oldest owed event, the DC-09 sender stops waiting for its next probe.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from edge.bus import Bus
from edge.bus.request import request
from edge.config import SiteConfig
from edge.diag.topics import VIDEO_REPLY, VIDEO_REQUEST
from edge.errors import BusError, CommandError
from edge.tasks import within

log = logging.getLogger(__name__)

VIDEO_ANSWER_S = 15.0  # edge-video reopens a camera and waits for its first picture
DC09_SLACK_S = 5.0


class Remedies:
    def __init__(self, cfg: SiteConfig, bus: Bus, uplink: Any) -> None:
        self.cfg, self.bus, self.uplink = cfg, bus, uplink

    async def carry_out(self, name: str, args: dict[str, Any], operator: str) -> dict[str, Any]:
        """The outcome of one maintenance command (``ok`` false with a reason if not done)."""
        try:
            if name == "restart":
                return await self._video({"action": "restart"}, operator)
            if name == "camera_reconnect":
                return await self._camera(str(args["camera"]), operator)
            if name == "dc09_test":
                return await self._dc09_test()
            if name == "outbox_flush":
                return self._flush()
        except CommandError as exc:
            return {"ok": False, "code": "failed", "reason": str(exc)}
        raise ValueError(f"{name!r} is not a maintenance command")

    # -- edge-video ---------------------------------------------------------------------------
    async def _camera(self, camera: str, operator: str) -> dict[str, Any]:
        known = [c.id for c in self.cfg.video.cameras]
        if camera not in known:
            raise CommandError(
                f"no camera {camera!r} on this site (cameras: {', '.join(known) or 'none'})"
            )
        return await self._video({"action": "reconnect", "camera": camera}, operator)

    async def _video(self, body: dict[str, Any], operator: str) -> dict[str, Any]:
        if not self.cfg.video.cameras:
            raise CommandError("this site runs no edge-video (no camera configured)")
        try:
            msg = await request(
                self.bus,
                VIDEO_REQUEST,
                {**body, "operator": operator},
                reply_base=VIDEO_REPLY,
                timeout=VIDEO_ANSWER_S,
            )
            answer = msg.json()
        except (BusError, TimeoutError, CommandError) as exc:
            return {
                "ok": False,
                "code": "unavailable",
                "reason": f"edge-video did not answer ({exc}): `systemctl status edge-video`; "
                "if it is stopped, systemd starts it again within seconds",
            }
        if not isinstance(answer, dict):
            return {"ok": False, "code": "unavailable", "reason": "edge-video answered nonsense"}
        answer.pop("v", None)
        return answer

    # -- transmission -------------------------------------------------------------------------
    async def _dc09_test(self) -> dict[str, Any]:
        feed = self.uplink.dc09
        if feed is None:
            raise CommandError("this site has no DC-09 path (dc09.enabled is false)")
        tx = feed.tx
        started = time.monotonic()
        try:
            result = await within(tx.poll(tries=1), tx.worst_case_s() * 2 + DC09_SLACK_S)
        except TimeoutError:
            raise CommandError("the DC-09 test got no outcome in time: the path is busy") from None
        if result.ok:  # a path answers: the sender need not wait for its next probe
            feed.outage.next_probe = 0.0
            feed.wake.set()
        return {
            "ok": result.ok,
            "code": "failed",
            "reason": f"no receiver path answered: {result.detail}",
            "receiver": result.receiver,
            "outcome": result.outcome,
            "detail": result.detail,
            "took_ms": round((time.monotonic() - started) * 1000, 1),
            "current": tx.current_path,
        }

    def _flush(self) -> dict[str, Any]:
        outbox = self.uplink.outbox
        if outbox is None:
            raise CommandError("this site has no transmission path (no outbox)")
        owed = {t: outbox.depth(t) for t in outbox.transports}
        central, feed = self.uplink.central, self.uplink.dc09
        out: dict[str, Any] = {"owed": owed}
        if central is not None:
            central.pass_after = 0  # the next pass starts again from the oldest owed event
            central.wake.set()
            out["mqtt"] = "resending now" if central.link_up else "link down: sent when back"
        if feed is not None:
            feed.outage.next_probe = 0.0
            feed.wake.set()
            out["dc09"] = "resending now"
        log.warning("outbox flush requested: %s", owed)
        return out
