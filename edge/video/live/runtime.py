"""Live view as edge-video runs it: the hub and everything plugged into it, built from config.

edge-video's service only sees ``loops()``, ``status()`` and ``close()``; which parts exist
(local web server, audio devices, tele-actions) follows the site configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from edge.bus import Bus
from edge.config import SiteConfig
from edge.video.live.hub import LiveHub
from edge.video.live.signalling import LiveSignalling

log = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], None]


class LiveRuntime:
    def __init__(
        self,
        cfg: SiteConfig,
        bus: Bus,
        cameras: Mapping[str, Any],
        report: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.cfg = cfg
        self.hub = LiveHub(
            cfg,
            {cid: cam.feed for cid, cam in cameras.items()},
            lambda cid: cameras[cid].ring.latest_keyframe_gop(),
            lambda cid: cameras[cid].up,
            report,
        )
        self.signalling = LiveSignalling(self.hub, bus, cameras)

    def loops(self, beat: Callable[[], None]) -> dict[str, Any]:
        loops: dict[str, Any] = dict(self.signalling.loops())
        loops["live-reaper"] = self.hub.reaper(beat)
        return loops

    def status(self) -> dict[str, Any]:
        return {"viewers": self.hub.status()}

    async def close(self) -> None:
        await self.hub.close_all("edge-video stopped")
