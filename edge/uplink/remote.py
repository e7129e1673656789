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
from collections.abc import Awaitable, Callable
from typing import Any

from edge.bus import Bus
from edge.bus.request import request
from edge.errors import BusError, CommandError
from edge.events import Event, Kind
from edge.uplink.commands import Command, CommandVerifier, Refusal, result_payload
from edge.uplink.topics import DOWN_CMD_ALL, up

log = logging.getLogger(__name__)

VIDEO_COMMANDS = ("live", "patrol")  # carried out by edge-video, under the access policy
VIDEO_TOPICS = {"live": "edge/live/grant", "patrol": "edge/live/patrol"}
VIDEO_REPLY_BASE = "edge/live/reply"
VIDEO_ANSWER_S = 12.0  # a patrol decodes one GOP per camera
# Safe remediation a level-1 maintainer may trigger (edge.alarm.remedies), and restart video.
MAINTENANCE = ("camera_reconnect", "dc09_test", "outbox_flush")
DiagFn = Callable[[str], Awaitable[dict[str, Any]]]
MaintainFn = Callable[[str, dict[str, Any], str], Awaitable[dict[str, Any]]]


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
        live_access: Callable[[], str | None] = lambda: None,
        diag: DiagFn | None = None,
        maintain: MaintainFn | None = None,
    ) -> None:
        self.site_id = site_id
        self.bus = bus
        self.verifier = verifier
        self.execute = execute
        self.journal_event = journal_event
        self.restart = restart
        self.live_access = live_access  # None: allowed now; else why not (policy)
        self.diag = diag  # a fresh diagnostics report, also sent on sites/<id>/diag
        self.maintain = maintain  # carries out a maintenance command

    async def run(self) -> None:
        sub = self.bus.subscribe(DOWN_CMD_ALL)
        async for msg in sub:
            name = msg.topic.rsplit("/", 1)[-1]
            if name == "result":  # our own answers, if the bridge echoes them
                continue
            started = time.monotonic()
            checked = self.verifier.verify(f"sites/{self.site_id}/cmd/{name}", msg.payload)
            outcome = None if isinstance(checked, Refusal) else await self.carry_out(checked)
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
            if (
                isinstance(checked, Command)
                and checked.name == "restart"
                and answer["ok"]
                and checked.args["service"] == "alarm"
            ):
                self.restart("alarm")  # after the result: edge-alarm stops, systemd restarts it

    async def carry_out(self, cmd: Command) -> dict[str, Any]:
        """Execute a verified command; a failure is an outcome with ok False, never a raise."""
        if cmd.name in VIDEO_COMMANDS:
            return await self._video(cmd)
        if cmd.name == "diag" and self.diag is not None:
            return await self._diag(cmd)
        maintenance = cmd.name in MAINTENANCE or cmd.args.get("service") == "video"
        if maintenance and self.maintain is not None:
            return await self.maintain(cmd.name, cmd.args, cmd.operator)
        try:
            return {"ok": True, **self._dispatch(cmd)}
        except CommandError as exc:
            return {"ok": False, "code": "failed", "reason": str(exc)}

    async def _video(self, cmd: Command) -> dict[str, Any]:
        """Policy first (edge-alarm holds the journal), then edge-video does the rest."""
        why_not = self.live_access()
        if why_not is not None:
            return {"ok": False, "code": "policy", "reason": why_not}
        body = {
            "session": cmd.nonce,
            "nonce": cmd.nonce,
            "camera": cmd.args.get("camera"),
            "operator": cmd.operator,
            "reason": cmd.args.get("reason", ""),
        }
        try:
            msg = await request(
                self.bus,
                VIDEO_TOPICS[cmd.name],
                body,
                reply_base=VIDEO_REPLY_BASE,
                timeout=VIDEO_ANSWER_S,
            )
            answer = msg.json()
        except (BusError, TimeoutError, CommandError) as exc:
            return {
                "ok": False,
                "code": "unavailable",
                "reason": f"edge-video did not answer: {exc}",
            }
        if not isinstance(answer, dict):
            return {"ok": False, "code": "unavailable", "reason": "edge-video answered nonsense"}
        answer.pop("v", None)
        return answer

    async def _diag(self, cmd: Command) -> dict[str, Any]:
        """Run the checks now; the full report goes to ``sites/<id>/diag`` (with this nonce)
        before this result, which carries its summary."""
        assert self.diag is not None
        report = await self.diag(cmd.nonce)
        return {
            "ok": True,
            "status": report.get("status"),
            "counts": report.get("counts"),
            "report": f"sites/{self.site_id}/diag",
            "report_ts": report.get("ts"),
        }

    def _dispatch(self, cmd: Command) -> dict[str, Any]:
        args, user = cmd.args, cmd.operator
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
        if cmd.name in MAINTENANCE:
            raise CommandError(f"{cmd.name} is not available on this box")
        if cmd.name == "restart":
            if args["service"] != "alarm":
                raise CommandError(f"service {args['service']!r} cannot be restarted remotely")
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
            maintenance = checked.name in MAINTENANCE or checked.name == "restart"
            if maintenance and isinstance(answer.get("result"), dict):
                details["result"] = answer["result"]  # what the remediation did
        kind: Kind | None = Kind.COMMAND_EXECUTED if answer["ok"] else Kind.COMMAND_REFUSED
        if answer.get("name") in VIDEO_COMMANDS:
            kind = self._video_kind(answer)  # None: edge-video reports the session's start, end
        if kind is not None:
            self.journal_event(Event(kind, details=details))

    @staticmethod
    def _video_kind(answer: dict[str, Any]) -> Kind | None:
        """The audit trail of video access: refusals of either, patrols carried out."""
        if not answer["ok"]:
            return Kind.LIVE_REFUSED
        return Kind.VIDEO_PATROL if answer.get("name") == "patrol" else None
