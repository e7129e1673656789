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
from pathlib import Path
from typing import Any

from edge.config import SiteConfig

log = logging.getLogger(__name__)

BUS_BUDGET_S = 0.6  # of the 1 s `edge diag` may take
CONNECT_STEP_S = 0.02
MEMO_FILE = "diag-memo.json"  # what checks carry from one run to the next (run_dir)
MEMO_MAX_BYTES = 64 * 1024


@dataclasses.dataclass
class Sources:
    cfg: SiteConfig
    now: float = dataclasses.field(default_factory=time.time)  # wall clock, seconds
    alarm: dict[str, Any] | None = None  # edge-alarm's status (edge/alarm/status)
    video: dict[str, Any] | None = None  # edge-video's status (edge/video/status)
    link: str | None = None  # the bridge's state: "1", "0" or None when unknown
    bus_error: str | None = None  # why the box broker could not be read, if it could not
    # Each zone's retained state (edge/zones/<id>/state): loop, bypass, volts and ohms.
    zones: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # per-family caches

    # -- what a check remembers between runs ----------------------------------------------------
    def memo(self, name: str) -> dict[str, Any]:
        """What check ``name`` remembered at its last run (empty the first time).

        `edge diag` is a new process each time, so a check that works incrementally (the
        journal's chain) or compares with its last reading (the disk's write counter) keeps a
        small dict in ``run_dir``; a long-running caller keeps it in ``extra`` as well.
        """
        memos = self._memos()
        value = memos.get(name)
        return dict(value) if isinstance(value, dict) else {}

    def remember(self, name: str, value: dict[str, Any]) -> bool:
        """Keep ``value`` for check ``name``'s next run; False when it could not be saved
        (a read-only run directory: the check then starts afresh next time)."""
        from edge.fsutil import atomic_write

        memos = self._memos()
        memos[name] = value
        data = json.dumps(memos, sort_keys=True).encode()
        if len(data) > MEMO_MAX_BYTES:
            log.warning("diagnostics memo too large (%d bytes): not saved", len(data))
            return False
        try:
            atomic_write(self._memo_path(), data, mode=0o600)
        except OSError as exc:
            log.debug("diagnostics memo not saved to %s: %s", self._memo_path(), exc)
            return False
        return True

    def _memo_path(self) -> Path:
        return Path(self.cfg.paths.run_dir) / MEMO_FILE

    def _memos(self) -> dict[str, Any]:
        memos = self.extra.get("memo")
        if isinstance(memos, dict):
            return memos
        memos = {}
        try:
            with self._memo_path().open("rb") as f:
                loaded = json.loads(f.read(MEMO_MAX_BYTES + 1))
            if isinstance(loaded, dict):
                memos = loaded
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.debug(
                "diagnostics memo %s unreadable (%s): starting afresh", self._memo_path(), exc
            )
        self.extra["memo"] = memos
        return memos


def from_bus(cfg: SiteConfig, credentials: Any, budget_s: float = BUS_BUDGET_S) -> Sources:
    """The retained statuses on the box broker, read within ``budget_s``."""
    import asyncio

    from edge.bus import Bus
    from edge.bus.once import quiet_bus
    from edge.bus.topics import Topics
    from edge.diag.topics import REPORT
    from edge.uplink.topics import link

    src = Sources(cfg)
    topics = {Topics.ALARM_STATUS: "alarm"}
    if cfg.video.cameras:
        topics["edge/video/status"] = "video"
    if _bridged(cfg):
        topics[link(cfg.site.id)] = "link"
    if cfg.zones:
        topics[Topics.ZONE_STATE_ALL] = "zones"
    topics[REPORT] = "report"  # edge-alarm's own run of the checks (edge.diag.retained)
    wanted = {t: len(cfg.zones) if f == "zones" else 1 for t, f in topics.items()}

    async def main() -> None:
        bus = Bus(cfg.bus.url, f"edge-diag-{time.monotonic_ns()}", credentials=credentials)
        subs = {t: bus.subscribe(t, maxsize=wanted[t] + 4) for t in topics}
        deadline = time.monotonic() + budget_s
        try:
            await bus.start()
            # A refusal (nothing listens, a bad identity) is the answer: no need to wait out
            # the budget for a retry that would be refused the same way.
            while not await bus.wait_connected(CONNECT_STEP_S):
                if bus.last_error is not None or time.monotonic() >= deadline:
                    src.bus_error = bus.last_error or "no answer"
                    return
            for topic, sub in subs.items():  # retained: each arrives at once, or never
                for _ in range(wanted[topic]):
                    left = deadline - time.monotonic()
                    try:
                        msg = await sub.get(timeout=max(0.05, left))
                    except TimeoutError:
                        break
                    _store(src, topics[topic], msg.payload, msg.topic)
        finally:
            await bus.close()

    with quiet_bus():  # the report says a failed connection once, in words
        asyncio.run(main())
    return src


def _store(src: Sources, field: str, payload: bytes, topic: str = "") -> None:
    if field == "link":
        src.link = payload.decode("ascii", "replace").strip()
        return
    try:
        value = json.loads(payload)
    except ValueError:
        return
    if not isinstance(value, dict):
        return
    if field == "report":
        src.extra["report"] = value
        return
    if field == "zones":  # edge/zones/<id>/state
        parts = topic.split("/")
        if len(parts) == 4 and parts[2] in {z.id for z in src.cfg.zones}:
            src.zones[parts[2]] = value
        return
    setattr(src, field, value)


def _bridged(cfg: SiteConfig) -> bool:
    return cfg.central is not None and cfg.central.enabled
