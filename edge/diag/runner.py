"""edge-alarm's diagnostics: every check, every few seconds, without ever stalling the alarm.

Order of truth: the checks run on a snapshot of edge-alarm's own state (taken on the event
loop: no round trip through the broker for its own data), in a worker thread bounded in time;
their findings pass the in-memory hold-off; then the faults the station must hear about are
journaled (edge.diag.station_faults), the arming block is updated, and only then is the
report published — retained on the box (``edge/diag/report``, for `edge diag`, the web
server and /metrics) and to the central station (``edge/up/diag`` → ``sites/<id>/diag``)
when a finding changed state, at start, when the link comes back owing one, and in answer
to a signed ``cmd/diag``.

A check that hangs (a helper program, a slow disk) never holds the loop: the run is given up
after ``RUN_BOUND_S``, the last report stays, and no new run starts until that thread ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from edge.bus import Bus
from edge.config import SiteConfig
from edge.diag.holdoff import HoldOff
from edge.diag.model import Finding, Status
from edge.diag.registry import run as run_checks
from edge.diag.report import assemble
from edge.diag.sources import Sources
from edge.diag.station_faults import StationFaults
from edge.diag.topics import REPORT
from edge.errors import BusError, CommandError
from edge.events import Event
from edge.tasks import within

log = logging.getLogger(__name__)

VIDEO_STATUS = "edge/video/status"  # edge.video.service.VIDEO_STATUS
INTERVAL_S = 10.0  # between runs
PENDING_S = 2.0  # between runs while a finding waits out its hold-off
RUN_BOUND_S = 5.0  # a run taking longer is given up (its thread is left to end)
PUBLISH_S = 5.0
PAYLOAD_VERSION = 1


class DiagRunner:
    """Runs the checks periodically and on request; keeps the last report."""

    def __init__(
        self,
        cfg: SiteConfig,
        *,
        bus: Bus,
        snapshot: Callable[[], Sources],
        journal_event: Callable[[Event], None],
        on_findings: Callable[[list[Finding]], None],
        link_up: Callable[[], bool],
        open_faults: set[str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.bus = bus
        self.snapshot = snapshot
        self.journal_event = journal_event
        self.on_findings = on_findings
        self.link_up = link_up
        self.central = cfg.central is not None and cfg.central.enabled
        self.holdoff = HoldOff(time.time)
        self.faults = StationFaults(cfg, open_faults)
        self.memo: dict[str, Any] = {}  # what checks carry between runs (Sources.memo)
        self.video: dict[str, Any] | None = None  # edge-video's retained status
        self.last: dict[str, Any] | None = None
        self.statuses: dict[str, str] = {}  # finding key → reported status at the last run
        self.pending = False  # a finding waits out its hold-off: run again sooner
        self.owed: dict[str, Any] | None = None  # a report for the station, link down
        self.busy = False  # a given-up run's thread has not ended yet
        self.runs = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    # -- loops --------------------------------------------------------------------------------
    async def run(self, beat: Callable[[], None]) -> None:
        """The periodic runs; beats at least every second whatever the checks do."""
        while True:
            beat()
            await self.run_once("start" if self.last is None else "periodic")
            due = time.monotonic() + (PENDING_S if self.pending else INTERVAL_S)
            self._wake.clear()
            while time.monotonic() < due and not self._wake.is_set():
                beat()
                if self.owed is not None and self.link_up():
                    await self._to_station(self.owed, "link back")
                with contextlib.suppress(TimeoutError):
                    await within(self._wake.wait(), min(1.0, max(0.0, due - time.monotonic())))

    async def follow_video(self) -> None:
        """edge-video's retained status, for the camera and service checks."""
        async for msg in self.bus.subscribe(VIDEO_STATUS, maxsize=8):
            try:
                body = msg.json()
            except CommandError:
                continue
            self.video = body if isinstance(body, dict) else None

    # -- one run ------------------------------------------------------------------------------
    async def run_once(self, reason: str, nonce: str | None = None) -> dict[str, Any]:
        """Run every check, act on the findings and publish the report; returns it."""
        async with self._lock:
            if self.busy and self.last is not None:
                log.warning("diagnostics: the previous run is still going; last report kept")
                return self.last
            started = time.monotonic()
            src = self.snapshot()
            src.video = self.video
            src.extra["memo"] = self.memo
            findings = await self._evaluate(src)
            if findings is None:
                return self.last or self._report([], reason, nonce, started)
            changed = self._changes(findings)
            for event in self.faults.judge(findings):
                self.journal_event(event)
            self.on_findings(findings)
            if changed and reason == "periodic":
                reason = "change"  # what the station is told: why this report came
            report = self._report(findings, reason, nonce, started)
            report["changed"] = changed
            self.last = report
            self.runs += 1
        await self._publish(report, reason, changed)
        return report

    async def _evaluate(self, src: Sources) -> list[Finding] | None:
        task = asyncio.ensure_future(asyncio.to_thread(run_checks, src, self.holdoff))
        try:
            return await within(asyncio.shield(task), RUN_BOUND_S)
        except TimeoutError:
            self.busy = True
            task.add_done_callback(lambda _t: setattr(self, "busy", False))
            log.error(
                "diagnostics: the checks took more than %.0f s (a helper program or the disk "
                "hangs); the last report stays until they end",
                RUN_BOUND_S,
            )
            return None

    def _changes(self, findings: list[Finding]) -> list[dict[str, str]]:
        """Findings whose reported status differs from the last run's (none at the first)."""
        now = {f.key: f.status.word for f in findings}
        first = not self.statuses
        changed = [
            {"check": f.check, "scope": f.scope, "from": self.statuses.get(f.key, "new"),
             "to": f.status.word}
            for f in findings
            if not first and self.statuses.get(f.key) != f.status.word
            and not (f.key not in self.statuses and f.status is Status.OK)
        ]  # fmt: skip
        self.statuses = now
        self.pending = any("pending" in f.evidence for f in findings)
        return changed

    def _report(
        self, findings: list[Finding], reason: str, nonce: str | None, started: float
    ) -> dict[str, Any]:
        report = assemble(self.cfg, findings)
        report.update(
            reason=reason,
            interval_s=INTERVAL_S,
            took_s=round(time.monotonic() - started, 3),
            source="edge-alarm",
        )
        if nonce is not None:
            report["nonce"] = nonce
        return report

    # -- publishing ---------------------------------------------------------------------------
    async def _publish(self, report: dict[str, Any], reason: str, changed: list[Any]) -> None:
        try:
            await self.bus.publish(REPORT, report, retain=True, timeout=PUBLISH_S)
        except BusError as exc:
            log.debug("diagnostics report not published on the box bus: %s", exc)
        if not self.central or reason not in ("start", "change", "command"):
            return
        if reason == "command" or self.link_up():
            await self._to_station(report)
        else:
            self.owed = report  # sent when the link is back (the latest one only)

    async def _to_station(self, report: dict[str, Any], why: str | None = None) -> None:
        """Send ``report`` to the station; on failure it is owed until the link is back."""
        from edge.uplink.topics import up

        body = report if why is None else {**report, "reason": why}
        try:
            await self.bus.publish(up("diag"), body, timeout=PUBLISH_S)
        except BusError as exc:
            log.warning("diagnostics report not sent to the central station: %s", exc)
            self.owed = report
            return
        self.owed = None  # the station has the newest report
        log.info(
            "diagnostics report sent to the central station (%s, %s)",
            body.get("reason"),
            body.get("status"),
        )
