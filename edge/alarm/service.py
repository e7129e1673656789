"""edge-alarm: inputs → zone logic → journal → box bus, supervised and watched by systemd.

Order of truth: an event is first committed to the journal (fsync), then published. The bus
publisher works from the journal with a cursor, so a broker outage or a restart never loses
an event on the box bus; at worst an event is published twice, with the same id.

This module must never import numpy, av, aiortc or picamera2 (see ARCHITECTURE §2).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import time
from pathlib import Path
from typing import Any

from edge import __version__, system
from edge.alarm.diagnostics import AlarmDiagnostics
from edge.alarm.disk import DiskWatch
from edge.alarm.inputs import Inputs, Reading
from edge.alarm.lifecycle import Lifecycle
from edge.alarm.local import LocalControl
from edge.alarm.outputs import OutputBank
from edge.alarm.panel import AlarmPanel, Outcome
from edge.alarm.remedies import Remedies
from edge.alarm.state import PanelStateFile
from edge.alarm.video_events import VideoEvents
from edge.bus import Bus, Topics, identity
from edge.bus.identity import optional_credentials
from edge.config import SiteConfig
from edge.errors import BusError, CommandError
from edge.events import Category, Event, Kind
from edge.hw.pins import make_pin_factory
from edge.journal import Journal, journal_path
from edge.tasks import supervise, within
from edge.uplink.runtime import Uplink

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
TICK_MAX_S = 1.0
STOPPED_STATUS = b'{"v":1,"running":false}'  # edge/alarm/status once edge-alarm is gone
STATUS_EVERY_S = 30.0


class AlarmService:
    """Owns every part of edge-alarm and the loops that connect them."""

    def __init__(self, cfg: SiteConfig) -> None:
        self.cfg = cfg
        self.loop = asyncio.get_running_loop()
        data = Path(cfg.paths.data_dir)
        self.journal = Journal(
            journal_path(cfg),
            keep_events=cfg.journal.keep_events,
            keep_days=cfg.journal.keep_days,
            max_events=cfg.journal.max_events,
        )
        self.panel = AlarmPanel(cfg)
        self.state_file = PanelStateFile(data / "panel-state.json")
        self.cursor = BusCursor(data / "bus-cursor")
        self.bus = Bus(
            cfg.bus.url,
            f"edge-alarm-{cfg.site.id}",
            queue_size=cfg.bus.queue_size,
            keepalive=cfg.bus.keepalive_s,
            # Retained, so a reader tells a stopped service from a silent one at once.
            will=(Topics.ALARM_STATUS, STOPPED_STATUS, True),
            credentials=optional_credentials(cfg.bus.identities_dir, identity.ALARM),
        )
        self.factory = make_pin_factory(cfg.hardware)
        # The simulated loops must be at rest before the inputs read them for the first time.
        self.sim = _simulator(cfg, self.factory)
        self.outputs = OutputBank(cfg.outputs, self.factory, self.loop, self._journal_one)
        self.inputs = Inputs(cfg, self.factory, self.loop, self._on_reading)
        self.watchdog = system.Watchdog()
        self.stop = asyncio.Event()
        published = lambda: self.cursor.seq  # noqa: E731 - the bus cursor, read when asked
        self.life = Lifecycle(data, self.stop, self._journal_one, self.journal.last_seq, published)
        self.local = LocalControl(
            cfg=cfg,
            bus=self.bus,
            panel=self.panel,
            outputs=self.outputs,
            apply=self.apply,
            status=self.status,
            sim=self.sim,
        )
        self.uplink = Uplink(
            cfg,
            bus=self.bus,
            journal=self.journal,
            journal_event=self._journal_one,
            execute=self.local.execute,
            status=self.health,
            restart=self._restart,
            watchdog=self.watchdog,
            diag=self._diag_report,
            maintain=self._maintain,
        )
        self.remedies = Remedies(cfg, self.bus, self.uplink)
        # A full data disk is a reported fault; detection, siren and transmission go on.
        self.disk = DiskWatch(
            data, self.journal, self.uplink.outbox, self._journal_one, self._save_arming
        )
        self.new_event = asyncio.Event()
        self.dirty_zones: set[str] = set()
        self.zone_dirty = asyncio.Event()
        self.started = time.monotonic()
        self.diagnostics = AlarmDiagnostics(self)  # last: it reads every part above

    # -- event flow -------------------------------------------------------------------------
    def _journal_one(self, event: Event) -> None:
        self.journal.append(event)
        self._committed()

    def _committed(self) -> None:
        """New journal rows: wake every reader of the journal (bus publisher, uplink)."""
        self.new_event.set()
        if hasattr(self, "uplink"):
            self.uplink.notify()

    def apply(self, outcome: Outcome) -> Outcome:
        """Commit an outcome: journal first, then outputs, then state for the bus."""
        if outcome.events:
            self.journal.append_many(outcome.events)
            self._committed()
            for ev in outcome.events:
                if ev.zone_id:
                    self.dirty_zones.add(ev.zone_id)
                if ev.category in (Category.ARMING, Category.BYPASS):
                    self._save_arming()
        for action in outcome.actions:
            try:
                if action.op == "on":
                    self.outputs.on(action.output, reason=action.reason)
                else:
                    self.outputs.off(action.output, reason=action.reason)
            except CommandError as exc:
                log.error("output action %s failed: %s", action, exc)
        self.zone_dirty.set()
        return outcome

    def _save_arming(self) -> None:
        try:
            self.state_file.save(self.panel.arming_state())
        except OSError as exc:  # a full disk: saved again when space is back (DiskWatch)
            log.error(
                "arming state not saved (%s): a restart now would restore the last saved one", exc
            )

    def _on_reading(self, reading: Reading) -> None:
        details = {
            k: round(v, 3)
            for k, v in (("volts", reading.volts), ("ohms", reading.ohms))
            if v is not None and v != float("inf")
        }
        now = reading.mono_ns / 1e9
        self.apply(self.panel.loop_changed(reading.zone_id, reading.state, now, details or None))
        self.dirty_zones.add(reading.zone_id)

    # -- loops ------------------------------------------------------------------------------
    async def publisher(self) -> None:
        """Publish journal rows after the cursor on edge/events, in order, waiting for PUBACK."""
        self.watchdog.register("publisher", max_silence=30.0)
        backoff = 0.1
        while True:
            self.watchdog.beat("publisher")
            rows = self.journal.since(self.cursor.seq, limit=200)
            if not rows:
                self.new_event.clear()
                rows = self.journal.since(self.cursor.seq, limit=200)
                if not rows:
                    with contextlib.suppress(TimeoutError):
                        await within(self.new_event.wait(), 1.0)
                    continue
            sent = await self.bus.publish_many(
                [(Topics.EVENTS, ev.to_dict()) for ev in rows], timeout=5.0
            )
            if sent:
                self.cursor.advance(rows[sent - 1].seq)
                backoff = 0.1
            if sent < len(rows):
                log.warning("box bus unavailable, %d event(s) waiting", len(rows) - sent)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def zone_states(self) -> None:
        """Publish each changed zone's state, retained; only the latest state matters.

        The panel status follows every change, and at least every STATUS_EVERY_S so its
        uptime stays fresh for whoever looks.
        """
        self.watchdog.register("zone_states", max_silence=30.0)
        self.dirty_zones.update(z.id for z in self.cfg.zones)
        status_due = 0.0
        while True:
            self.watchdog.beat("zone_states")
            changed = False
            with contextlib.suppress(TimeoutError):
                changed = await within(self.zone_dirty.wait(), 1.0)
            self.zone_dirty.clear()
            try:
                while self.dirty_zones:
                    zone_id = self.dirty_zones.pop()
                    try:
                        await self.bus.publish(
                            Topics.zone_state(zone_id),
                            self.zone_payload(zone_id),
                            retain=True,
                            timeout=5.0,
                        )
                    except BusError:
                        self.dirty_zones.add(zone_id)
                        raise
                if changed or time.monotonic() >= status_due:
                    await self.bus.publish(
                        Topics.ALARM_STATUS, self.status(), retain=True, timeout=5.0
                    )
                    status_due = time.monotonic() + STATUS_EVERY_S
            except BusError:
                await asyncio.sleep(1.0)

    def zone_payload(self, zone_id: str) -> dict[str, Any]:
        payload = {"v": 1, **self.panel.zone_status(zone_id)}
        reading = self.inputs.snapshot().get(zone_id)
        if reading is not None:
            payload["volts"] = reading.volts
            payload["ohms"] = None if reading.ohms == float("inf") else reading.ohms
        return payload

    def status(self) -> dict[str, Any]:
        return {
            "v": 1,
            "running": True,
            "ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "site": self.cfg.site.id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "journal_seq": self.journal.last_seq(),
            "panel": self.panel.status(),
            "outputs": self.outputs.states(),
            "outbox": self.uplink.stats(),
            "disk": self.disk.status(),
            **self.uplink.diag_fields(),
        }

    async def ticker(self) -> None:
        """Drive delays, schedules, bell cut-off and journal pruning."""
        self.watchdog.register("ticker", max_silence=10.0)
        # Local time only matters to arming schedules; without any, skip the tz database.
        scheduled = any(p.schedules for p in self.cfg.partitions)
        tz = _zone(self.cfg.site.timezone) if scheduled else dt.timezone.utc
        next_prune = time.monotonic() + 60.0
        while True:
            now = time.monotonic()
            self.apply(self.panel.tick(now, dt.datetime.now(tz)))
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY_S
                self._prune()
            self.watchdog.beat("ticker")
            deadline = self.panel.next_deadline()
            delay = TICK_MAX_S if deadline is None else min(TICK_MAX_S, max(0.0, deadline - now))
            await asyncio.sleep(delay)

    def _prune(self) -> None:
        removed = self.journal.prune(floor_seq=self.uplink.oldest_pending_seq())
        if removed:
            self._journal_one(Event(Kind.JOURNAL_PRUNED, details={"removed": removed}))

    async def adc(self) -> None:
        self.watchdog.register("inputs", max_silence=10.0)
        await self.inputs.run_adc(beat=lambda: self.watchdog.beat("inputs"))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Bring inputs up and restore the arming state before declaring READY."""
        self.life.journal_start()  # service_started: version, how the previous run ended
        if self.cursor.seq == 0:
            self.cursor.advance(self.journal.last_seq() - 1)
        self.outputs.start()
        self.inputs.start()
        saved = self.state_file.load()
        if saved:
            self.apply(self.panel.restore_arming(saved, time.monotonic()))

    async def run(self) -> None:
        await self.bus.start()
        loops = {
            "publisher": self.publisher(),
            "zone_states": self.zone_states(),
            "ticker": self.ticker(),
            "adc": self.adc(),
            "commands": self.local.run_commands(),
            "live_actions": self.local.run_live_actions(),
            "watchdog": self.watchdog.run(),
            "disk": self.disk.run(lambda: self.watchdog.beat("disk")),
        }
        self.watchdog.register("disk", max_silence=30.0)
        self.watchdog.register("diag", max_silence=30.0)
        loops.update(self.diagnostics.loops(lambda: self.watchdog.beat("diag")))
        if self.cfg.hardware.backend == "sim":
            loops["simulator"] = self.local.run_simulator()
        if self.cfg.video.cameras:
            loops["video_events"] = VideoEvents(self._journal_one, self.armed).run(self.bus)
        loops.update(self.uplink.loops())
        status = f"monitoring {len(self.cfg.zones)} zone(s) of site {self.cfg.site.id}"
        loops["ready"] = self.life.announce_ready(self.bus, status)  # last: after subscribing
        await supervise(loops)

    def armed(self) -> bool:
        """Is any partition set (its zones watched for intrusion)?"""
        states = (p["state"] for p in self.panel.status()["partitions"].values())
        return any(s not in ("disarmed", "exit_delay") for s in states)

    def health(self) -> dict[str, Any]:
        """What the heartbeat reports: arming, open faults, versions."""
        panel = self.panel.status()
        faults = [
            {"zone": zid, "loop": z.get("loop")}
            for zid, z in panel["zones"].items()
            if z.get("loop") not in ("normal", "alarm")
        ]
        return {
            "uptime_s": time.monotonic() - self.started,
            "armed": {pid: p["state"] for pid, p in panel["partitions"].items()},
            "faults": faults + self.disk.faults(),
            "versions": {"edge": __version__},
        }

    async def _diag_report(self, nonce: str) -> dict[str, Any]:
        return await self.diagnostics.report(nonce)

    async def _maintain(self, name: str, args: dict[str, Any], operator: str) -> dict[str, Any]:
        return await self.remedies.carry_out(name, args, operator)

    def _restart(self, service: str) -> None:
        log.warning("restart of %s requested by the central station", service)
        self.loop.call_later(0.5, self.life.request_stop, f"restart command ({service})")

    async def close(self) -> None:
        await self.uplink.close()
        self.inputs.close()
        self.outputs.close()
        with contextlib.suppress(BusError):  # a clean stop says so (the will covers a crash)
            await self.bus.publish(Topics.ALARM_STATUS, STOPPED_STATUS, retain=True, timeout=1.0)
        await self.bus.close()
        self.journal.close()


class BusCursor:
    """Last journal seq published on the bus; replaced atomically, not fsynced (duplicates are
    harmless because event ids are stable, losses are not)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.seq = int(path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            self.seq = 0

    def advance(self, seq: int) -> None:
        self.seq = max(0, seq)
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(str(self.seq))
            tmp.replace(self.path)
        except OSError as exc:  # a full disk: kept in memory; a restart republishes (same ids)
            log.debug("bus cursor %s not saved: %s", self.path, exc)


def _simulator(cfg: SiteConfig, factory: Any) -> Any:
    """The simulated loops of a `backend = "sim"` site (imported only then)."""
    if cfg.hardware.backend != "sim":
        return None
    from edge.hw.sim import SimHardware

    return SimHardware(cfg, factory)


def _zone(name: str) -> dt.tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:
        log.warning("unknown time zone %r, schedules use UTC", name)
        return dt.timezone.utc


async def run_alarm(cfg: SiteConfig) -> int:
    """Entry point of `edge run alarm`: returns the process exit code."""
    service = AlarmService(cfg)
    service.start()
    stop = service.stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        service.loop.add_signal_handler(sig, service.life.request_stop, sig.name)
    # READY=1 comes from the "ready" loop, once the box-bus subscriptions exist (lifecycle.py).
    runner = asyncio.create_task(service.run(), name="service")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():  # a clean stop: journaled while the publisher still runs
            await service.life.journal_stop(None)
    finally:
        system.stopping()
        runner.cancel()
        stopper.cancel()
        await asyncio.gather(runner, stopper, return_exceptions=True)
        if runner.done() and not runner.cancelled() and runner.exception():
            await service.life.journal_stop(runner.exception())
        await service.close()
    if runner.done() and not runner.cancelled() and runner.exception():
        return 70
    return 0
