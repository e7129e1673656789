"""Live view as edge-video runs it: the hub and everything plugged into it, built from config.

edge-video's service only sees ``loops()``, ``status()`` and ``close()``; which parts exist
(local web server, audio devices, tele-actions) follows the site configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from edge.bus import Bus
from edge.config import SiteConfig
from edge.errors import ConfigError
from edge.video.live.actions import Actions
from edge.video.live.hub import LiveHub
from edge.video.live.signalling import LiveSignalling

if TYPE_CHECKING:  # WebRTC and aiohttp load only when used (below, and in LiveHub.grant)
    from edge.video.live.audio import AudioDevices
    from edge.video.live.session import LiveSession
    from edge.web.server import WebServer

log = logging.getLogger(__name__)

WEB_RETRY_S = 30.0


class LiveRuntime:
    def __init__(
        self,
        cfg: SiteConfig,
        bus: Bus,
        cameras: Mapping[str, Any],
        report: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.cfg = cfg
        audio = cfg.live.audio
        self.audio: AudioDevices | None = None
        if audio.listen_in or audio.talk_down:
            from edge.video.live.audio import AudioDevices

            self.audio = AudioDevices(audio)
        self.hub = LiveHub(
            cfg,
            {cid: cam.feed for cid, cam in cameras.items()},
            lambda cid: cameras[cid].ring.latest_keyframe_gop(),
            lambda cid: cameras[cid].up,
            report,
            audio=self.audio,
        )
        self.actions = Actions(
            bus=bus,
            live=cfg.live,
            cameras={cam.id: cam for cam in cfg.video.cameras},
            report=report,
        )
        self.hub.on_action = self._action
        self.hub.forget = self.actions.forget
        self.signalling = LiveSignalling(self.hub, bus, cameras)
        self.web: WebServer | None = None
        if cfg.web.enabled and cfg.live.enabled:
            from edge.web.server import WebServer

            self.web = WebServer(cfg.web, self.hub, site_id=cfg.site.id)

    async def _action(self, raw: str | bytes, session: LiveSession) -> dict[str, Any]:
        grant = session.grant
        return await self.actions.handle(
            raw, session=grant.session, camera=grant.camera, operator=grant.operator
        )

    def loops(self, beat: Callable[[], None]) -> dict[str, Any]:
        loops: dict[str, Any] = dict(self.signalling.loops())
        loops["live-reaper"] = self.hub.reaper(beat)
        if self.web is not None:
            loops["web"] = self.serve_web()
        return loops

    async def serve_web(self) -> None:
        """Supervised: bind the local web server, retrying while the address is unavailable
        (a LAN page must never keep the cameras from recording)."""
        assert self.web is not None
        while True:
            try:
                await self.web.start()
            except ConfigError as exc:
                log.error("local web server not started, retrying in %.0f s: %s", WEB_RETRY_S, exc)
                await asyncio.sleep(WEB_RETRY_S)
                continue
            log.info("local web server (WHEP live view) on %s", self.web.url)
            await asyncio.get_running_loop().create_future()  # runs until cancelled

    def status(self) -> dict[str, Any]:
        return {"viewers": self.hub.status()}

    async def close(self) -> None:
        await self.hub.close_all("edge-video stopped")
        if self.web is not None:
            with contextlib.suppress(Exception):
                await self.web.stop()
        if self.audio is not None:
            await self.audio.close()
