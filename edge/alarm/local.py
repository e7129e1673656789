"""Requests to edge-alarm from the box itself: local users, live tele-actions, the simulator.

Who asks is decided by the topic, never by the message: the box broker's ACL lets identity
``U`` publish only on ``edge/local/U/cmd``, edge-video only on ``edge/live/action`` and the
simulator only on ``edge/sim/zones/+/set``. So the user journaled for a local command is the
identity that sent it (a ``user`` field in the body is ignored), and edge-video, the process
that parses network input, can ask for nothing but the tele-actions the site allows
(``[live.actions] outputs``). Answers go under ``edge/alarm/reply/<caller class>/…``, which
only that caller may read. The central station's commands are signed and go through
edge.uplink.remote, which ends in the same :meth:`LocalControl.execute`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from edge.alarm.outputs import OutputBank
from edge.alarm.panel import AlarmPanel, Outcome
from edge.bus import Bus, Message, Topics
from edge.config import SiteConfig
from edge.errors import BusError, CommandError

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 5.0
MAX_OPERATOR_CHARS = 64
ACTIONS = ("on", "off", "pulse")


class LocalControl:
    def __init__(
        self,
        *,
        cfg: SiteConfig,
        bus: Bus,
        panel: AlarmPanel,
        outputs: OutputBank,
        apply: Callable[[Outcome], Outcome],
        status: Callable[[], dict[str, Any]],
        sim: Any = None,
    ) -> None:
        self.cfg, self.bus, self.panel, self.outputs = cfg, bus, panel, outputs
        self.apply, self.status, self.sim = apply, status, sim

    # -- loops --------------------------------------------------------------------------------
    async def run_commands(self) -> None:
        """`edge panel` requests on edge/local/<user>/cmd; <user> is the sender's identity."""
        async for msg in self.bus.subscribe(Topics.LOCAL_CMD_ALL):
            user = Topics.id_in(Topics.LOCAL_CMD_ALL, msg.topic)
            req = _object(msg)
            result = self._guarded(partial(self.execute, {**req, "user": user}), req)
            await self._reply(req, Topics.local_reply(user), result)

    async def run_live_actions(self) -> None:
        """Tele-actions edge-video asks for on behalf of a live session's operator."""
        async for msg in self.bus.subscribe(Topics.LIVE_ACTION):
            req = _object(msg)
            result = self._guarded(partial(self._live_action, req), req)
            await self._reply(req, Topics.LIVE_ACTION_REPLY, result)

    async def run_simulator(self) -> None:
        """In sim mode, `edge sim` sets loops over the bus (edge/sim/zones/<id>/set)."""
        assert self.sim is not None
        async for msg in self.bus.subscribe(Topics.SIM_SET_ALL):
            zone_id = Topics.id_in(Topics.SIM_SET_ALL, msg.topic)
            text = msg.payload.decode("utf-8", "replace").strip()
            req: dict[str, Any] = {}
            if text.startswith("{"):
                req = _object(msg)
                text = str(req.get("cmd", ""))
            try:
                result = {"ok": True, "zone": zone_id, "said": self.sim.apply(zone_id, text)}
            except CommandError as exc:
                result = {"ok": False, "zone": zone_id, "reason": str(exc)}
            if "reply" in req:
                await self._reply(req, Topics.SIM_REPLY, result)

    # -- what each request may do ---------------------------------------------------------------
    def execute(self, req: dict[str, Any]) -> dict[str, Any]:
        """Carry out one request; ``req["user"]`` is already the verified identity."""
        action = req.get("action")
        now = time.monotonic()
        user = req.get("user")
        if action in ("arm", "disarm"):
            part = str(req.get("partition") or self.cfg.partitions[0].id)
            if action == "arm":
                mode: Literal["full", "part"] = "part" if req.get("mode") == "part" else "full"
                out = self.panel.arm(
                    part, mode, now, force=bool(req.get("force")), source="command", user=user
                )
            else:
                out = self.panel.disarm(part, now, source="command", user=user)
            self.apply(out)
            if not out.ok:
                raise CommandError(out.reason)
            return {"partition": self.panel.partition_status(part)}
        if action in ("bypass", "unbypass"):
            zone = str(req.get("zone"))
            fn = self.panel.bypass if action == "bypass" else self.panel.unbypass
            out = self.apply(fn(zone, now, source="command", user=user))
            if not out.ok:
                raise CommandError(out.reason)
            return {"zone": self.panel.zone_status(zone)}
        if action in ACTIONS:
            return self._output(req, user, reason="command")
        if action == "status":
            return self.status()
        raise CommandError(
            f"unknown action {action!r}: use arm, disarm, bypass, unbypass, "
            "on, off, pulse or status"
        )

    def _live_action(self, req: dict[str, Any]) -> dict[str, Any]:
        """edge-video's request: an output of the site's tele-action allow-list, nothing else."""
        action, output = req.get("action"), req.get("output")
        if action not in ACTIONS:
            raise CommandError(f"a live session may only switch outputs, not {action!r}")
        allowed = self.cfg.live.actions.outputs
        if output not in allowed:
            raise CommandError(
                f"output {output!r} is not a tele-action output of this site "
                f"(live.actions.outputs: {', '.join(allowed) or 'none'})"
            )
        operator = req.get("user")
        if not isinstance(operator, str) or not operator or len(operator) > MAX_OPERATOR_CHARS:
            raise CommandError("a live tele-action names its operator (1-64 characters)")
        return self._output(req, operator, reason="command")

    def _output(self, req: dict[str, Any], user: Any, *, reason: str) -> dict[str, Any]:
        output, action = str(req.get("output")), req.get("action")
        if action == "pulse":
            return self.outputs.pulse(output, req.get("seconds"), reason=reason, user=user)
        switch = self.outputs.on if action == "on" else self.outputs.off
        return switch(output, reason=reason, user=user)

    # -- plumbing --------------------------------------------------------------------------------
    @staticmethod
    def _guarded(fn: Callable[[], dict[str, Any]], req: dict[str, Any]) -> dict[str, Any]:
        if "_error" in req:
            return {"ok": False, "reason": req["_error"]}
        try:
            return {"ok": True, **fn()}
        except CommandError as exc:
            return {"ok": False, "reason": str(exc)}

    async def _reply(self, req: dict[str, Any], base: str, result: dict[str, Any]) -> None:
        """Answer on the request's private topic when it lies under ``base`` (the caller's own
        reply space); an answer that cannot be sent is logged, never fatal."""
        topic = req.get("reply")
        if not isinstance(topic, str) or not topic.startswith(base + "/"):
            return
        try:
            Topics.id_in(base + "/+", topic)  # exactly one level under base, no wildcard
            await self.bus.publish(topic, {"v": 1, **result}, timeout=REPLY_TIMEOUT_S)
        except (BusError, CommandError, ValueError) as exc:
            log.warning("could not answer on %s: %s", topic, exc)


def _object(msg: Message) -> dict[str, Any]:
    """The request as a dict; a malformed one carries its error under ``_error``."""
    try:
        req = msg.json()
    except CommandError as exc:
        return {"_error": str(exc)}
    if not isinstance(req, dict):
        return {"_error": 'a request is a JSON object such as {"action": "status"}'}
    req.pop("_error", None)
    return req
