"""Signed commands from the central station: verify, execute, answer, journal.

Commands arrive on ``sites/<id>/cmd/<name>`` (``edge/down/cmd/<name>`` on the box broker).
Each one is verified (signature, site, clock window, nonce, arguments — see
edge.uplink.commands), executed through the same code path as a local `edge panel` command,
answered on ``cmd/result`` with its nonce, and journaled with the operator's id whether it
was carried out or refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edge.bus import Bus
from edge.errors import BusError, CommandError
from edge.events import Event, Kind
from edge.uplink.commands import Command, CommandVerifier, Refusal, result_payload
from edge.uplink.topics import DOWN_CMD_ALL, up

log = logging.getLogger(__name__)

# Which local action each remote command maps onto.
NOT_YET = {
    "live": "live view is not available on this box yet (edge-video)",
    "patrol": "video patrol is not available on this box yet (edge-video)",
}


class CommandChannel:
    """The box end of ``cmd/<name>`` → ``cmd/result``."""

    def __init__(
        self,
        *,
        site_id: str,
        bus: Bus,
        verifier: CommandVerifier,
        execute: Callable[[dict[str, Any]], dict[str, Any]],
        journal_event: Callable[[Event], None],
        restart: Callable[[str], None],
    ) -> None:
        self.site_id = site_id
        self.bus = bus
        self.verifier = verifier
        self.execute = execute
        self.journal_event = journal_event
        self.restart = restart

    async def run(self) -> None:
        sub = self.bus.subscribe(DOWN_CMD_ALL)
        async for msg in sub:
            name = msg.topic.rsplit("/", 1)[-1]
            if name == "result":  # our own answers, if the bridge echoes them
                continue
            started = time.monotonic()
            checked = self.verifier.verify(f"sites/{self.site_id}/cmd/{name}", msg.payload)
            outcome = None if isinstance(checked, Refusal) else self.carry_out(checked)
            answer = result_payload(checked, outcome)
            answer["took_ms"] = round((time.monotonic() - started) * 1000, 1)
            self._journal(checked, answer)
            try:
                await self.bus.publish(up("cmd/result"), answer, timeout=5.0)
            except BusError as exc:
                log.error(
                    "result of command %s (nonce %s) not published: %s",
                    answer.get("name"),
                    answer.get("nonce"),
                    exc,
                )
            if isinstance(checked, Command) and checked.name == "restart" and answer["ok"]:
                self.restart(checked.args["service"])

    def carry_out(self, cmd: Command) -> dict[str, Any]:
        """Execute a verified command; a failure is an outcome with ok False, never a raise."""
        try:
            return {"ok": True, **self._dispatch(cmd)}
        except CommandError as exc:
            return {"ok": False, "code": "failed", "reason": str(exc)}

    def _dispatch(self, cmd: Command) -> dict[str, Any]:
        args, user = cmd.args, cmd.operator
        if cmd.name in NOT_YET:
            raise CommandError(NOT_YET[cmd.name])
        if cmd.name == "output":
            return self.execute(
                {
                    "action": args["op"],
                    "output": args["output"],
                    "seconds": args.get("seconds"),
                    "user": user,
                }
            )
        if cmd.name == "diag":
            return self.execute({"action": "status"})
        if cmd.name == "restart":
            if args["service"] != "alarm":
                raise CommandError(f"service {args['service']!r} is not on this box yet")
            return {"restarting": "alarm"}
        return self.execute({"action": cmd.name, **args, "user": user})

    def _journal(self, checked: Command | Refusal, answer: dict[str, Any]) -> None:
        details = {
            k: answer.get(k)
            for k in ("name", "nonce", "operator", "ok", "code", "reason")
            if answer.get(k) is not None
        }
        if isinstance(checked, Command):
            details["args"] = checked.args
            details["key"] = checked.key_id
        kind = Kind.COMMAND_EXECUTED if answer["ok"] else Kind.COMMAND_REFUSED
        self.journal_event(Event(kind, details=details))
