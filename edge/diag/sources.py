"""What the checks look at, gathered once per run and bounded in time.

Two ways in, one shape out. `edge diag` reads the services' retained statuses from the box
broker (at most ``BUS_BUDGET_S``; a broker that does not answer is itself the first finding)
and the files on disk. edge-alarm, which runs the same checks periodically, fills the same
fields from its own state without a round trip through the broker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from edge.config import SiteConfig

BUS_BUDGET_S = 0.6  # of the 1 s `edge diag` may take


@dataclasses.dataclass
class Sources:
    cfg: SiteConfig
    now: float = dataclasses.field(default_factory=time.time)  # wall clock, seconds
    alarm: dict[str, Any] | None = None  # edge-alarm's status (edge/alarm/status)
    video: dict[str, Any] | None = None  # edge-video's status (edge/video/status)
    link: str | None = None  # the bridge's state: "1", "0" or None when unknown
    bus_error: str | None = None  # why the box broker could not be read, if it could not
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # per-family caches


def from_bus(cfg: SiteConfig, credentials: Any, budget_s: float = BUS_BUDGET_S) -> Sources:
    """The retained statuses on the box broker, read within ``budget_s``."""
    import asyncio

    from edge.bus import Bus
    from edge.bus.topics import Topics
    from edge.uplink.topics import link

    src = Sources(cfg)
    topics = {Topics.ALARM_STATUS: "alarm"}
    if cfg.video.cameras:
        topics["edge/video/status"] = "video"
    if _bridged(cfg):
        topics[link(cfg.site.id)] = "link"

    # The bus logs each failed attempt; the report says it once, in words.
    logging.getLogger("edge.bus").setLevel(logging.ERROR)

    async def main() -> None:
        bus = Bus(cfg.bus.url, f"edge-diag-{time.monotonic_ns()}", credentials=credentials)
        subs = {t: bus.subscribe(t, maxsize=4) for t in topics}
        deadline = time.monotonic() + budget_s
        try:
            await bus.start()
            if not await bus.wait_connected(budget_s):
                src.bus_error = bus.last_error or "no answer"
                return
            for topic, sub in subs.items():  # retained: each arrives at once, or never
                left = deadline - time.monotonic()
                try:
                    msg = await sub.get(timeout=max(0.05, left))
                except TimeoutError:
                    continue
                _store(src, topics[topic], msg.payload)
        finally:
            await bus.close()

    asyncio.run(main())
    return src


def _store(src: Sources, field: str, payload: bytes) -> None:
    if field == "link":
        src.link = payload.decode("ascii", "replace").strip()
        return
    try:
        value = json.loads(payload)
    except ValueError:
        return
    if isinstance(value, dict):
        setattr(src, field, value)


def _bridged(cfg: SiteConfig) -> bool:
    return cfg.central is not None and cfg.central.enabled
