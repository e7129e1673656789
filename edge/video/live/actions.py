"""Tele-actions an operator sends on a live session's `actions` data channel.

The session's grant was checked when it was opened; here, per message: the site's allow-list
(``[live.actions]``), the arguments (the very schema of signed ``cmd/output`` commands, so both
paths accept the same things) and a per-session rate. Outputs belong to edge-alarm, the only
process that drives relays and writes the journal: we ask it over the box bus as ``edge panel``
does, and it journals the change with the operator as user. PTZ presets go to the camera
(ONVIF) in a thread. Messages (``camera`` defaults to the session's):

- ``{"id": 7, "do": "output", "output": "gate", "op": "on"|"off"|"pulse", "seconds": 5}``
- ``{"id": "a1", "do": "ptz", "preset": "2", "camera": "yard"}``

:meth:`Actions.handle` never raises. Replies: ``{"id", "ok": true, "result"}`` or ``{"id",
"ok": false, "code", "reason"}``, ``id`` echoed once well-formed (else null); every message is
also reported once for the journal (a run of rate refusals: once, until the session may
act again).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.bus import Bus, Topics
from edge.bus.request import request
from edge.config.live import LiveConfig
from edge.config.models import ID_PATTERN
from edge.config.video import Camera
from edge.errors import BusError, CommandError
from edge.uplink.commands import check_arguments, utc_now
from edge.uplink.signing import utc_stamp
from edge.video.live.onvif import OnvifError, goto_preset

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 2048
ALARM_TIMEOUT_S = 3.0
RATE_LIMIT = 10  # actions per session ...
RATE_WINDOW_S = 10.0  # ... within this many seconds
MAX_SESSIONS = 64  # rate buckets kept; the least recently used is forgotten first
# edge-alarm's tele-action topic: the only command topic edge-video may publish on; edge-alarm
# checks the allow-list again there, so a compromised edge-video cannot arm, disarm or bypass.
ALARM_ACTION = Topics.LIVE_ACTION
REPLY = Topics.LIVE_ACTION_REPLY  # base of each request's private reply topic
_ID = re.compile(ID_PATTERN)
_PRESET = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_EXAMPLE = '{"id": 1, "do": "output", "output": "gate", "op": "pulse"}'

Report = Callable[[str, dict[str, Any]], None]


class _Refused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass
class _Bucket:
    """Recent action times of one session, and whether its rate refusal was reported."""

    times: deque[float] = field(default_factory=lambda: deque(maxlen=RATE_LIMIT))
    reported_until: float = -1.0


@dataclass
class _Audit:
    """What one message asked for, filled in as far as it could be read."""

    id: int | str | None = None
    do: str | None = None
    target: str | None = None
    op: str | None = None


class Actions:
    """Checks and carries out the tele-actions of every live session of the box."""

    def __init__(
        self,
        *,
        bus: Bus,
        live: LiveConfig,
        cameras: Mapping[str, Camera],
        report: Report,
        alarm_timeout: float = ALARM_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus, self.live, self.cameras, self.report = bus, live, cameras, report
        self.alarm_timeout = alarm_timeout
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def tracked_sessions(self) -> int:
        """Sessions whose rate is tracked (at most MAX_SESSIONS)."""
        return len(self._buckets)

    def forget(self, session: str) -> None:
        """The session ended: drop its rate bucket."""
        self._buckets.pop(session, None)

    async def handle(
        self, raw: str | bytes, *, session: str, camera: str, operator: str
    ) -> dict[str, Any]:
        """The reply to one data-channel message; never raises (cancellation excepted)."""
        audit = _Audit()
        report = True
        try:
            result = await self._handle(raw, audit, session, camera, operator)
            reply: dict[str, Any] = {"id": audit.id, "ok": True, "result": result}
        except _Refused as exc:
            reply = {"id": audit.id, "ok": False, "code": exc.code, "reason": exc.reason}
            report = exc.code != "rate" or self._first_rate_refusal(session)
        except Exception:
            log.exception("live action of session %s: internal error", session)
            reason = "the box could not carry out this action (internal error, logged)"
            reply = {"id": audit.id, "ok": False, "code": "internal", "reason": reason}
        if report:
            self._report(camera, session, operator, audit, reply)
        return reply

    async def _handle(
        self, raw: str | bytes, audit: _Audit, session: str, camera: str, operator: str
    ) -> dict[str, Any]:
        data = _read(raw, audit)
        self._admit(session)  # malformed messages count too: a flood is a flood
        if isinstance(data, _Refused):
            raise data
        args = {k: v for k, v in data.items() if k not in ("id", "do")}
        if data.get("do") == "output":
            return await self._output(args, audit, operator)
        if data.get("do") == "ptz":
            return await self._ptz(args, audit, camera)
        got = _short(data.get("do"))
        raise _Refused("unknown_do", f'"do" must be "output" or "ptz", not {got}; e.g. {_EXAMPLE}')

    # -- outputs (edge-alarm) ---------------------------------------------------------------

    async def _output(self, args: dict[str, Any], audit: _Audit, operator: str) -> dict[str, Any]:
        if isinstance(args.get("output"), str) and _ID.fullmatch(args["output"]):
            audit.target = args["output"]
        if isinstance(args.get("op"), str) and args["op"] in ("on", "off", "pulse"):
            audit.op = args["op"]
        checked = check_arguments("output", args)
        if isinstance(checked, str):
            raise _Refused("bad_arguments", checked)
        output = checked["output"]
        allowed = self.live.actions.outputs
        if output not in allowed:
            why = f"allowed: {', '.join(allowed)}" if allowed else "none is allowed on this site"
            raise _Refused(
                "not_allowed",
                f"output {output!r} may not be switched from a live session ({why}); the "
                "installer lists it in [live.actions] outputs",
            )
        seconds = checked.get("seconds")
        body = {"action": checked["op"], "output": output, "seconds": seconds, "user": operator}
        return await self._ask_alarm(body)

    async def _ask_alarm(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            timeout = self.alarm_timeout
            msg = await request(self.bus, ALARM_ACTION, body, reply_base=REPLY, timeout=timeout)
            answer = msg.json()
        except (TimeoutError, BusError) as exc:
            raise _Refused(
                "unavailable",
                f"edge-alarm did not answer within {self.alarm_timeout:g} s ({exc}); the "
                "output may or may not have switched: check its state, and the alarm service "
                "(systemctl status edge-alarm)",
            ) from None
        except CommandError as exc:
            raise _Refused("failed", f"edge-alarm's answer is unreadable ({exc})") from None
        if not isinstance(answer, dict):
            raise _Refused("failed", "edge-alarm's answer is not a JSON object")
        if answer.get("ok") is not True:
            reason = str(answer.get("reason") or "edge-alarm refused the action")
            raise _Refused("failed", reason)
        return {k: v for k, v in answer.items() if k not in ("v", "ok")}

    # -- PTZ (ONVIF) --------------------------------------------------------------------------

    async def _ptz(self, args: dict[str, Any], audit: _Audit, camera: str) -> dict[str, Any]:
        audit.op = "goto"
        extra = sorted(set(args) - {"preset", "camera"})
        if extra:
            raise _Refused(
                "bad_arguments",
                f"ptz: unknown argument {_short(extra[0])} (allowed: preset, camera)",
            )
        cam_id, preset = args.get("camera", camera), args.get("preset")
        if not isinstance(cam_id, str) or not _ID.fullmatch(cam_id):
            raise _Refused(
                "bad_arguments", f"ptz: 'camera' must be a camera id, not {_short(cam_id)}"
            )
        if not isinstance(preset, str) or not _PRESET.fullmatch(preset):
            why = "a preset token: 1 to 64 letters, digits or _ . : -"
            raise _Refused("bad_arguments", f"ptz: 'preset' must be {why}, not {_short(preset)}")
        audit.target = f"{cam_id}:{preset}"
        if not self.live.actions.ptz:
            raise _Refused(
                "not_allowed", "PTZ is disabled on this site; the installer sets [live.actions] ptz"
            )
        cam = self.cameras.get(cam_id)
        if cam is None:
            known = ", ".join(sorted(self.cameras)) or "none"
            raise _Refused("unknown_camera", f"no camera {cam_id!r} on this box (cameras: {known})")
        if cam.onvif is None:
            raise _Refused(
                "no_ptz",
                f"camera {cam_id!r} has no PTZ control; the installer adds an [onvif] block "
                "to it in site.toml",
            )
        try:
            await asyncio.to_thread(goto_preset, cam.onvif, preset)
        except OnvifError as exc:
            raise _Refused(exc.code, str(exc)) from None
        return {"camera": cam_id, "preset": preset}

    # -- rate and audit -----------------------------------------------------------------------

    def _admit(self, session: str) -> None:
        now = self._clock()
        bucket = self._buckets.pop(session, None) or _Bucket()
        self._buckets[session] = bucket  # most recently used last
        while len(self._buckets) > MAX_SESSIONS:
            self._buckets.popitem(last=False)
        while bucket.times and now - bucket.times[0] >= RATE_WINDOW_S:
            bucket.times.popleft()
        if len(bucket.times) >= RATE_LIMIT:
            wait = RATE_WINDOW_S - (now - bucket.times[0])
            raise _Refused(
                "rate",
                f"more than {RATE_LIMIT} actions in {RATE_WINDOW_S:g} s on this session: "
                f"wait {max(wait, 0.1):.1f} s and send it again",
            )
        bucket.times.append(now)

    def _first_rate_refusal(self, session: str) -> bool:
        """Report a run of rate refusals once (until a slot frees): a flood must not flood the
        journal; reports stay bounded to about twice RATE_LIMIT per window and session."""
        bucket = self._buckets.get(session)
        if bucket is None or not bucket.times:
            return True
        if bucket.reported_until > self._clock():
            return False
        bucket.reported_until = bucket.times[0] + RATE_WINDOW_S
        return True

    def _report(
        self, camera: str, session: str, operator: str, audit: _Audit, reply: dict[str, Any]
    ) -> None:
        payload = {
            "v": 1,
            "event": "action",
            "session": session,
            "operator": operator,
            "id": audit.id,
            "do": audit.do,
            "target": audit.target,
            "op": audit.op,
            "ok": reply["ok"],
            "code": reply.get("code"),
            "reason": reply.get("reason"),
            "ts": utc_stamp(utc_now()),
        }
        log.log(logging.INFO if reply["ok"] else logging.WARNING, "live action: %s", payload)
        try:
            self.report(camera, payload)
        except Exception:
            log.exception("live action report for camera %s could not be queued", camera)


def _read(raw: str | bytes, audit: _Audit) -> dict[str, Any] | _Refused:
    """The message as a JSON object with a usable id (noted in ``audit``), or why not."""
    size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
    if size > MAX_MESSAGE_BYTES:
        return _Refused(
            "too_large", f"the message is {size} bytes; an action is at most {MAX_MESSAGE_BYTES}"
        )
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        return _Refused("bad_json", f"the message is not JSON ({exc}); e.g. {_EXAMPLE}")
    if not isinstance(data, dict):
        return _Refused("bad_json", f"an action is a JSON object, e.g. {_EXAMPLE}")
    do, value = data.get("do"), data.get("id")
    audit.do = do if isinstance(do, str) and len(do) <= 16 else None
    if (type(value) is int and abs(value) < 2**53) or (
        isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable()
    ):
        audit.id = value
        return data
    why = f"a whole number or a text of 1 to 64 characters, not {_short(value)}"
    return _Refused("bad_id", f'"id" must be {why}: the reply carries it back')


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
