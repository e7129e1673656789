"""Every live session of the box: grants, viewer caps, timeouts and the audit reports.

Access control happens before a session exists: the central station's ``cmd/live`` is
verified and checked against the site's policy by edge-alarm (which owns the journal and
knows the alarms), the LAN's WHEP request by the web server's per-box credentials. The hub
then enforces what only it can know: the camera exists and is on, and it has a free viewer
slot. A slot is taken at the grant, so a granted viewer is never turned away at the offer.
The central station always gets a slot: when a camera (or the box) is full, a signed
central request ends a LAN viewer's session to make room (the one not connected, else the
most recent; its ``ended`` report says why). LAN viewers never end a central session, and
central sessions compete only with each other for the cap.

Every session is reported twice on ``edge/video/<camera>/live`` — ``started`` at the grant
and ``ended`` with its duration and why — and every refusal the hub decides for a LAN
request once (``refused``); edge-alarm journals them (the audit trail) and they reach the
central station as events.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from edge.config import SiteConfig
from edge.video.camera import wall_iso
from edge.video.frames import EncodedPacket
from edge.video.live.api import LiveRefused
from edge.video.live.feed import LiveFeed
from edge.video.live.ice import ice_servers

if TYPE_CHECKING:  # the session module loads WebRTC (aiortc): at the first grant, in grant()
    from edge.video.live.session import ActionHandler, LiveSession, Via

log = logging.getLogger(__name__)

REAP_EVERY_S = 1.0
HUNG_UP = "viewer hung up"
OFFER_REFUSED = "offer refused"  # the refusal itself tells the viewer why
SILENT_ENDS = (HUNG_UP, OFFER_REFUSED)
MAX_SESSIONS = 64  # whatever the per-camera caps add up to
REPLACED = "replaced by a central station session (the central station always gets a slot)"

Report = Callable[[str, dict[str, Any]], None]


class LiveHub:
    """Owned by edge-video; shares its event loop with the cameras."""

    def __init__(
        self,
        cfg: SiteConfig,
        feeds: Mapping[str, LiveFeed],
        backlog: Callable[[str], list[EncodedPacket]],
        camera_up: Callable[[str], bool | None],
        report: Report,
        *,
        audio: Any = None,
        on_action: ActionHandler | None = None,
    ) -> None:
        self.cfg = cfg
        self.live = cfg.live
        self.feeds = feeds
        self.backlog = backlog
        self.camera_up = camera_up
        self.report = report
        self.audio = audio
        self.on_action = on_action
        self.sessions: dict[str, LiveSession] = {}
        # Told when the box ends a central session itself (the console must hear of it).
        self.on_end: Callable[[str, str], Awaitable[None]] | None = None
        self.forget: Callable[[str], None] = lambda session: None  # per-session state elsewhere
        self.names = {c.id: c.name or c.id for c in cfg.video.cameras}
        self._ending: set[asyncio.Task[None]] = set()  # sessions ended to make room

    # -- grants ------------------------------------------------------------------------------
    def grant(
        self, *, session: str, camera: str, operator: str, reason: str, via: Via, remote: str = ""
    ) -> LiveSession:
        """Reserve a viewer slot; LiveRefused says why not (nothing is reported here)."""
        if not self.live.enabled:
            raise LiveRefused("disabled", "live view is disabled on this box (live.enabled)")
        if camera not in self.feeds:
            known = ", ".join(sorted(self.feeds)) or "none"
            raise LiveRefused("unknown_camera", f"no camera {camera!r} here (cameras: {known})")
        if session in self.sessions:
            raise LiveRefused("bad_offer", f"session {session} already exists")
        if self.camera_up(camera) is False:
            raise LiveRefused("unknown_camera", f"camera {camera!r} has no video right now")
        if via == "central":
            self._room_for_central(camera)
        if len(self.sessions) >= MAX_SESSIONS:
            raise LiveRefused(
                "viewer_cap", f"the box already serves {MAX_SESSIONS} live sessions: retry later"
            )
        viewers = self.viewers(camera)
        if viewers >= self.live.viewers_per_camera:
            raise LiveRefused(
                "viewer_cap",
                f"camera {camera!r} already has {viewers} viewer(s), the most allowed "
                f"(live.viewers_per_camera = {self.live.viewers_per_camera}): retry later",
            )
        from edge.video.live.session import Grant, LiveSession

        grant = Grant(session, camera, operator, reason, via, remote)
        servers = ice_servers(self.live, f"{self.cfg.site.id}-{session[:8]}")
        feed = self.feeds[camera]
        live = LiveSession(
            grant,
            feed,
            lambda: self.backlog(camera),
            servers,
            audio=self.audio,
            on_action=self.on_action,
        )
        self.sessions[session] = live
        log.info(
            "live session %s granted: camera %s to %s (%s)%s",
            session,
            camera,
            operator,
            via,
            f", reason: {reason}" if reason else "",
        )
        self._report(live, "started", start=wall_iso(live.started_wall))
        return live

    def _room_for_central(self, camera: str) -> None:
        """End a LAN viewer's session when the central station's would not fit."""
        if self.viewers(camera) >= self.live.viewers_per_camera:
            victim = self._lan_victim(camera)
        elif len(self.sessions) >= MAX_SESSIONS:
            victim = self._lan_victim(None)
        else:
            return
        if victim is None:
            return  # central sessions only: the cap holds
        live = self.sessions.pop(victim)
        log.info("live session %s ended to make room for the central station", victim)
        task = asyncio.get_running_loop().create_task(self._end(live, REPLACED))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def _lan_victim(self, camera: str | None) -> str | None:
        """The LAN session to end: one never connected first, else the most recent."""
        lan = [
            s
            for s in self.sessions.values()
            if s.grant.via == "lan" and (camera is None or s.grant.camera == camera)
        ]
        if not lan:
            return None
        lan.sort(key=lambda s: (s.connected_once, -s.started))
        return lan[0].id

    def viewers(self, camera: str) -> int:
        return sum(1 for s in self.sessions.values() if s.grant.camera == camera)

    async def offer(self, session: str, sdp: str) -> str:
        live = self.sessions.get(session)
        if live is None:
            raise LiveRefused(
                "unknown_session", f"no live session {session}: send cmd/live first (or it ended)"
            )
        answered = live.pc is not None
        try:
            return await live.answer(sdp)
        except LiveRefused:
            if not answered:  # a repeated offer (QoS 1 duplicate) must not end a live session
                await self.close(session, OFFER_REFUSED)
            raise

    async def open_lan(
        self, camera: str, offer_sdp: str, *, user: str, remote: str
    ) -> tuple[str, str]:
        """WHEP: grant and answer at once; refusals are reported here (no one else will)."""
        session = "lan-" + secrets.token_hex(8)
        operator = f"lan:{user}"
        try:
            self.grant(
                session=session, camera=camera, operator=operator, reason="", via="lan",
                remote=remote,
            )  # fmt: skip
        except LiveRefused as exc:
            self.refused(camera, operator, exc, via="lan", remote=remote)
            raise
        return session, await self.offer(session, offer_sdp)

    def refused(
        self, camera: str, operator: str, exc: LiveRefused, *, via: Via, remote: str = ""
    ) -> None:
        body = {
            "v": 1,
            "event": "refused",
            "camera": camera,
            "operator": operator,
            "via": via,
            "remote": remote,
            "code": exc.code,
            "reason": exc.reason,
            "ts": wall_iso(time.time()),
        }
        self.report(camera if camera in self.feeds else "_", body)

    # -- ends --------------------------------------------------------------------------------
    async def close(self, session: str, why: str) -> bool:
        live = self.sessions.pop(session, None)
        if live is None:
            return False
        await self._end(live, why)
        return True

    async def _end(self, live: LiveSession, why: str) -> None:
        session = live.id
        await live.close(why)
        self.forget(session)
        end = time.time()
        self._report(
            live,
            "ended",
            start=wall_iso(live.started_wall),
            end=wall_iso(end),
            duration_s=round(end - live.started_wall, 1),
            why=why,
            connected=live.connected_once,
            **live.stats(),
        )
        log.info("live session %s ended: %s", session, why)
        if self.on_end is not None and live.grant.via == "central" and why not in SILENT_ENDS:
            await self.on_end(session, why)

    async def reaper(self, beat: Callable[[], None] | None = None) -> None:
        """Supervised: close sessions never connected / disconnected too long, or too long."""
        while True:
            if beat:
                beat()
            now = time.monotonic()
            for sid, live in list(self.sessions.items()):
                if now - live.started >= self.live.max_session_s:
                    await self.close(sid, f"maximum duration reached ({self.live.max_session_s} s)")
                elif (
                    live.idle_since is not None
                    and now - live.idle_since >= self.live.idle_timeout_s
                ):
                    what = (
                        "viewer disconnected" if live.connected_once else "viewer never connected"
                    )
                    await self.close(sid, f"{what} for {self.live.idle_timeout_s} s")
            await asyncio.sleep(REAP_EVERY_S)

    async def close_all(self, why: str) -> None:
        for sid in list(self.sessions):
            await self.close(sid, why)
        if self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)

    # -- views -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "site": self.cfg.site.id,
            "cameras": [
                {
                    "id": cid,
                    "name": self.names.get(cid, cid),
                    "up": self.camera_up(cid),
                    "viewers": self.viewers(cid),
                    "cap": self.live.viewers_per_camera,
                }
                for cid in self.feeds
            ],
            "outputs": list(self.live.actions.outputs),
        }

    def session_camera(self, session: str) -> str | None:
        live = self.sessions.get(session)
        return live.grant.camera if live else None

    def session_owner(self, session: str) -> tuple[str, str] | None:
        live = self.sessions.get(session)
        return (live.grant.camera, live.grant.operator) if live else None

    def audit(self, body: dict[str, Any]) -> None:
        """An audit row of the web server (refused-login summary), as edge-video reports."""
        camera = str(body.get("camera") or "")
        self.report(camera if camera in self.feeds else "_", body)

    def status(self) -> dict[str, Any]:
        return {cid: self.viewers(cid) for cid in self.feeds}

    def _report(self, live: LiveSession, event: str, **extra: Any) -> None:
        g = live.grant
        body = {
            "v": 1,
            "event": event,
            "session": g.session,
            "camera": g.camera,
            "operator": g.operator,
            "reason": g.reason,
            "via": g.via,
            "remote": g.remote,
            "ts": wall_iso(time.time()),
            **extra,
        }
        self.report(g.camera, body)
