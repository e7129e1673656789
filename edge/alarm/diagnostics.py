"""edge-alarm's side of the diagnostics: its own state as the checks' sources, and the
findings that refuse arming.

The checks (edge.diag) read what edge-alarm publishes; here edge-alarm hands them the same
data directly — its status, its zones' readings, the bridge link it follows, whether its own
bus connection is up — so a run costs no round trip through the broker. edge-video's status
comes from its retained topic (the runner follows it). After each run the ``fail`` findings
of arming-relevant checks become the panel's blockers: arming is then refused with the
reason, or forced and journaled (edge.alarm.partitions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge.alarm.partitions import Blocker
from edge.diag.model import Finding, Status
from edge.diag.runner import DiagRunner
from edge.diag.sources import Sources
from edge.diag.station_faults import open_in_journal
from edge.journal import journal_path

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 5.0  # the first run waits this long for the box broker


class AlarmDiagnostics:
    """Builds the runner from the service's parts (``service``: the AlarmService)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.runner = DiagRunner(
            service.cfg,
            bus=service.bus,
            snapshot=self.snapshot,
            journal_event=service._journal_one,
            on_findings=self.blockers,
            link_up=self.link_up,
            open_faults=open_in_journal(journal_path(service.cfg)),
        )

    def loops(self, beat: Callable[[], None]) -> dict[str, Any]:
        loops: dict[str, Any] = {"diag": self._run(beat)}
        if self.service.cfg.video.cameras:
            loops["diag_video"] = self.runner.follow_video()
        return loops

    async def _run(self, beat: Callable[[], None]) -> None:
        # Not before the bus is up: a service just starting is not a broker fault.
        await self.service.bus.wait_connected(CONNECT_WAIT_S)
        await self.runner.run(beat)

    async def report(self, nonce: str) -> dict[str, Any]:
        """A fresh run, for a signed ``cmd/diag`` (the report also goes to the station)."""
        return await self.runner.run_once("command", nonce)

    # -- what the runner asks -------------------------------------------------------------------
    def snapshot(self) -> Sources:
        s = self.service
        src = Sources(s.cfg)
        src.alarm = s.status()
        if not s.bus.connected:
            src.bus_error = "edge-alarm is not connected to the box broker"
        central = s.uplink.central
        if central is not None:
            src.link = "1" if central.link_up else "0"
        src.zones = {z.id: s.zone_payload(z.id) for z in s.cfg.zones}
        return src

    def link_up(self) -> bool:
        central = self.service.uplink.central
        return bool(central is not None and central.link_up)

    def blockers(self, findings: list[Finding]) -> None:
        """The arming-relevant failures become the panel's blockers."""
        zones = {z.id for z in self.service.cfg.zones}
        found = tuple(
            Blocker(
                f.check,
                f.scope,
                f.summary,
                zone=f.scope if f.check.startswith("zone.") and f.scope in zones else None,
            )
            for f in findings
            if f.arming and f.status is Status.FAIL
        )
        panel = self.service.panel
        if found != panel.blockers:
            if found:
                log.warning(
                    "arming is refused while: %s",
                    "; ".join(f"{b.check}: {b.summary}" for b in found),
                )
            panel.blockers = found
            self.service.zone_dirty.set()  # the panel status (open zones, faults) changed
