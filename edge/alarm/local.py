"""Local control of edge-alarm over the box bus: `edge panel` commands and the simulator.

These requests come from the box itself (installer or maintainer CLI, tests, hw-sim). The
central station's commands are signed and go through edge.uplink.remote, which ends in the
same :meth:`LocalControl.execute`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from edge.bus import Message, Topics
from edge.errors import CommandError

if TYPE_CHECKING:
    from edge.alarm.service import AlarmService


class LocalControl:
    def __init__(self, service: AlarmService) -> None:
        self.svc = service

    async def run_commands(self) -> None:
        """Local commands on edge/alarm/cmd (arm, disarm, bypass, output) for the CLI and tests."""
        sub = self.svc.bus.subscribe(Topics.ALARM_CMD)
        async for msg in sub:
            await self._reply(msg, self._command(msg))

    def _command(self, msg: Message) -> dict[str, Any]:
        try:
            req = msg.json()
            if not isinstance(req, dict):
                raise CommandError('a command is a JSON object such as {"action": "arm"}')
            return {"ok": True, **self.execute(req)}
        except CommandError as exc:
            return {"ok": False, "reason": str(exc)}

    def execute(self, req: dict[str, Any]) -> dict[str, Any]:
        action = req.get("action")
        now = time.monotonic()
        user = req.get("user")
        if action in ("arm", "disarm"):
            part = str(req.get("partition") or self.svc.cfg.partitions[0].id)
            if action == "arm":
                mode: Literal["full", "part"] = "part" if req.get("mode") == "part" else "full"
                out = self.svc.panel.arm(
                    part, mode, now, force=bool(req.get("force")), source="command", user=user
                )
            else:
                out = self.svc.panel.disarm(part, now, source="command", user=user)
            self.svc.apply(out)
            if not out.ok:
                raise CommandError(out.reason)
            return {"partition": self.svc.panel.partition_status(part)}
        if action in ("bypass", "unbypass"):
            zone = str(req.get("zone"))
            fn = self.svc.panel.bypass if action == "bypass" else self.svc.panel.unbypass
            out = self.svc.apply(fn(zone, now, source="command", user=user))
            if not out.ok:
                raise CommandError(out.reason)
            return {"zone": self.svc.panel.zone_status(zone)}
        if action in ("on", "off", "pulse"):
            output = str(req.get("output"))
            if action == "pulse":
                return self.svc.outputs.pulse(
                    output, req.get("seconds"), reason="command", user=user
                )
            switch = self.svc.outputs.on if action == "on" else self.svc.outputs.off
            return switch(output, reason="command", user=user)
        if action == "status":
            return self.svc.status()
        raise CommandError(
            f"unknown action {action!r}: use arm, disarm, bypass, unbypass, "
            "on, off, pulse or status"
        )

    async def _reply(self, msg: Message, result: dict[str, Any]) -> None:
        try:
            req = msg.json()
        except CommandError:
            req = {}
        topic = req.get("reply") if isinstance(req, dict) else None
        if not isinstance(topic, str) or not topic.startswith("edge/"):
            topic = Topics.ALARM_CMD_RESULT
        await self.svc.bus.publish(topic, {"v": 1, **result}, timeout=5.0)

    async def run_simulator(self) -> None:
        """In sim mode, `edge sim` sets loops over the bus (edge/sim/zones/<id>/set)."""
        assert self.svc.sim is not None
        sub = self.svc.bus.subscribe(Topics.SIM_SET_ALL)
        async for msg in sub:
            zone_id = msg.topic.split("/")[3]
            text = msg.payload.decode("utf-8", "replace").strip()
            reply = None
            if text.startswith("{"):
                try:
                    body = msg.json()
                    text, reply = str(body.get("cmd", "")), body.get("reply")
                except (CommandError, AttributeError):
                    pass
            try:
                result = {"ok": True, "zone": zone_id, "said": self.svc.sim.apply(zone_id, text)}
            except CommandError as exc:
                result = {"ok": False, "zone": zone_id, "reason": str(exc)}
            if isinstance(reply, str) and reply.startswith("edge/sim/"):
                await self.svc.bus.publish(reply, result, timeout=5.0)
