"""Assemble the transmission side of edge-alarm from the site configuration.

Which parts run depends on what the site configures: the MQTT path (outbox transport
``mqtt``, acks, heartbeat, link supervision) when ``central`` is set, the DC-09 path when
``dc09.enabled``, and signed remote commands when central keys are provisioned. Each part is
a set of named loops the alarm service supervises with its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.bus import Bus
from edge.config import SiteConfig
from edge.events import Event
from edge.journal import Journal
from edge.system import Watchdog

if TYPE_CHECKING:
    from edge.uplink.outbox import Outbox

log = logging.getLogger(__name__)

Loop = Coroutine[Any, Any, Any]


class Uplink:
    """The box → central paths of one site; empty when the site configures none."""

    def __init__(
        self,
        cfg: SiteConfig,
        *,
        bus: Bus,
        journal: Journal,
        journal_event: Callable[[Event], None],
        execute: Callable[[dict[str, Any]], dict[str, Any]],
        status: Callable[[], dict[str, Any]],
        restart: Callable[[str], None],
        watchdog: Watchdog,
        diag: Any = None,
        maintain: Any = None,
    ) -> None:
        """``diag`` and ``maintain``: the diagnostics report and the maintenance actions the
        signed commands ``diag``, ``restart video``, ``camera_reconnect``, ``dc09_test`` and
        ``outbox_flush`` use (edge.uplink.remote)."""
        self.cfg = cfg
        self.watchdog = watchdog
        central = getattr(cfg, "central", None)
        self.mqtt_enabled = bool(central and central.enabled)
        self.dc09_enabled = bool(cfg.dc09 and cfg.dc09.enabled)
        transports = [
            t for t, on in (("mqtt", self.mqtt_enabled), ("dc09", self.dc09_enabled)) if on
        ]
        self.outbox = _outbox(cfg, transports) if transports else None
        self.central: Any = None
        self.dc09: Any = None
        self.commands: Any = None
        if self.outbox is not None:
            self.outbox.catch_up(journal)
        if central is not None and self.mqtt_enabled and self.outbox is not None:
            from edge.uplink.central import CentralLink

            self.central = CentralLink(
                site_id=cfg.site.id,
                bus=bus,
                journal=journal,
                outbox=self.outbox,
                journal_event=journal_event,
                status=status,
                heartbeat_s=cfg.heartbeat.interval_s,
                trouble_after_s=central.link_trouble_after_s,
                beat=watchdog.beat,
            )
        if cfg.dc09 is not None and self.dc09_enabled and self.outbox is not None:
            self.dc09 = _dc09_feed(cfg, journal, self.outbox, journal_event, watchdog.beat)
        if cfg.remote.keys:
            self.commands = _command_channel(cfg, bus, journal, execute, journal_event, restart)
            self.commands.diag, self.commands.maintain = diag, maintain

    def notify(self) -> None:
        """New journal rows: wake the senders (they enqueue from the journal themselves)."""
        for part in (self.central, self.dc09):
            if part is not None:
                part.notify()

    def loops(self) -> dict[str, Loop]:
        loops: dict[str, Loop] = {}
        if self.central is not None:
            for name in ("central_sender", "heartbeat", "link"):
                self.watchdog.register(name, max_silence=30.0)
            loops.update(
                central_sender=self.central.run_sender(),
                central_acks=self.central.run_acks(),
                heartbeat=self.central.run_heartbeat(),
                link=self.central.run_link(),
            )
        if self.dc09 is not None:
            # The DC-09 loop beats every second, even while a send waits on a dead receiver.
            self.watchdog.register("dc09", max_silence=30.0)
            loops.update(dc09=self.dc09.run(), dc09_supervision=self.dc09.run_supervision())
        if self.commands is not None:
            loops["commands_remote"] = self.commands.run()
        return loops

    def oldest_pending_seq(self) -> int | None:
        return self.outbox.oldest_pending_seq() if self.outbox is not None else None

    def stats(self) -> dict[str, Any]:
        return self.outbox.stats() if self.outbox is not None else {}

    def diag_fields(self) -> dict[str, Any]:
        """What edge-alarm's status adds for the diagnostics (edge.diag.checks.transmission):
        when the box broker last took a heartbeat, when the station last acknowledged."""
        central = self.central
        if central is None:
            return {}
        return {
            "heartbeat": {
                "interval_s": central.heartbeat.interval_s,
                "last_ts": getattr(central, "last_beat_ts", None),
            },
            "central": {"last_ack_ts": getattr(central, "last_ack_ts", None)},
        }

    async def close(self) -> None:
        if self.dc09 is not None:
            await self.dc09.tx.close()
        if self.outbox is not None:
            self.outbox.close()


def _dc09_feed(
    cfg: SiteConfig,
    journal: Journal,
    outbox: Outbox,
    journal_event: Callable[[Event], None],
    beat: Callable[[str], None],
) -> Any:
    from edge.uplink.dc09 import Dc09Transmitter
    from edge.uplink.dc09_feed import Dc09Feed
    from edge.uplink.dc09_sequence import SEQUENCE_FILE

    holder: dict[str, Dc09Feed] = {}
    assert cfg.dc09 is not None
    tx = Dc09Transmitter(
        cfg.dc09,
        cfg,
        on_path_change=lambda path, up: holder["feed"].path_changed(path, up),
        sequence_file=Path(cfg.paths.data_dir) / SEQUENCE_FILE,
    )
    holder["feed"] = Dc09Feed(
        transmitter=tx, journal=journal, outbox=outbox, journal_event=journal_event, beat=beat
    )
    return holder["feed"]


def _command_channel(
    cfg: SiteConfig,
    bus: Bus,
    journal: Journal,
    execute: Callable[[dict[str, Any]], dict[str, Any]],
    journal_event: Callable[[Event], None],
    restart: Callable[[str], None],
) -> Any:
    from edge.live_policy import SCAN_LIMIT, LiveAccess
    from edge.uplink.commands import NONCE_FILE, CommandVerifier, NonceStore
    from edge.uplink.remote import CommandChannel

    store = NonceStore(Path(cfg.paths.data_dir) / NONCE_FILE, cfg.remote.nonce_capacity)
    verifier = CommandVerifier(cfg.site.id, cfg.remote, store)
    access = LiveAccess(cfg.live, lambda since: journal.query(since_ts=since, limit=SCAN_LIMIT))
    return CommandChannel(
        site_id=cfg.site.id,
        bus=bus,
        verifier=verifier,
        execute=execute,
        journal_event=journal_event,
        restart=restart,
        live_access=access.check,
    )


def _outbox(cfg: SiteConfig, transports: list[str]) -> Outbox:
    """Imported here: a site with no transmission path configured never loads it."""
    from edge.uplink.outbox import Outbox, outbox_path

    return Outbox(
        outbox_path(cfg.paths.data_dir),
        transports,
        max_rows=cfg.outbox.max_rows,
        backoff_s=cfg.outbox.backoff_s,
    )
