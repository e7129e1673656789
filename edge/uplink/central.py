"""Delivery to the central station through the box broker's bridge, acknowledged by event id.

Every event that must reach the central station sits in the outbox until the station
publishes its id on ``sites/<id>/ack`` (``edge/down/ack`` on the box broker). The sender
publishes in journal order (docs/protocol.md's ordering rule: a station's view of a zone is
the last event it received, so a restore must never overtake its alarm), the ack listener
removes what was acknowledged. Sending is a series of passes over what is owed, oldest first:
a pass sends each owed event once, in order, and new events as they come; when the oldest
owed event has waited its retry time without an ack, or the link comes back, a new pass
starts from the oldest again (already-delivered copies are duplicates the station ignores by
id). No later event is ever sent before an earlier owed one in the same pass, and a backlog
never waits for per-event retry times. A local PUBACK only means the box broker took the
message; it is never taken as delivery.

Nothing is handed to the bridge while its link is down: the outbox, not the broker's queue,
holds the backlog, so no resent copies pile up in the bridge's queue.

The link watcher follows mosquitto's bridge notifications: when the path has been down
longer than ``central.link_trouble_after_s``, a communication-trouble event (YC / 350) is
journaled — it travels by DC-09 if that path works, and over MQTT once the link is back —
followed by its restore when the link returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from edge.bus import Bus, Message
from edge.errors import BusError, CommandError
from edge.events import Event, Kind
from edge.journal import Journal
from edge.tasks import within
from edge.uplink.heartbeat import HeartbeatScheduler, heartbeat_payload
from edge.uplink.outbox import Outbox
from edge.uplink.topics import down, link, up

log = logging.getLogger(__name__)

TRANSPORT = "mqtt"
BATCH = 500
ACK_BATCH_S = 0.02


class CentralLink:
    """Outbox sender, ack listener, heartbeat and link supervision for the MQTT path."""

    def __init__(
        self,
        *,
        site_id: str,
        bus: Bus,
        journal: Journal,
        outbox: Outbox,
        journal_event: Callable[[Event], None],
        status: Callable[[], dict[str, Any]],
        heartbeat_s: float,
        trouble_after_s: float,
        beat: Callable[[str], None],
    ) -> None:
        self.site_id = site_id
        self.bus = bus
        self.journal = journal
        self.outbox = outbox
        self.journal_event = journal_event
        self.status = status
        self.heartbeat = HeartbeatScheduler(heartbeat_s)
        self.trouble_after_s = trouble_after_s
        self.beat = beat
        self.wake = asyncio.Event()
        self.link_up = False
        self.link_changed = time.monotonic()
        self.in_trouble = False
        self.pass_after = 0  # highest seq sent in the current pass over the backlog
        self.last_beat_ts: float | None = None  # wall clock: the broker took a heartbeat
        self.last_ack_ts: float | None = None  # wall clock: the station acknowledged

    def notify(self) -> None:
        """New journal rows exist: enqueue them and wake the sender."""
        self.wake.set()

    # -- sender -------------------------------------------------------------------------------
    async def run_sender(self) -> None:
        backoff = 0.1
        while True:
            self.beat("central_sender")
            self.outbox.catch_up(self.journal)
            if not self.link_up:  # keep them here, not in the bridge queue
                self.pass_after = 0  # the next pass starts from the oldest owed event
                await self._idle()
                continue
            items = self.outbox.oldest(TRANSPORT, BATCH, after=self.pass_after)
            if not items:
                if not self._oldest_overdue():
                    await self._idle()
                    continue
                self.pass_after = 0  # go back: resend everything owed, oldest first
                items = self.outbox.oldest(TRANSPORT, BATCH)
            try:
                await self._send(items)
                self.pass_after = items[-1].seq
                backoff = 0.1
            except BusError as exc:
                log.warning(
                    "box bus unavailable, %d event(s) wait for the central station: %s",
                    self.outbox.depth(TRANSPORT),
                    exc,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _send(self, items: list[Any]) -> None:
        events = self.journal.by_seqs([i.seq for i in items])
        found = {e.seq for e in events}
        for item in items:
            if item.seq not in found:
                self.outbox.reject(TRANSPORT, item.seq, "no longer in the journal")
        topic = up("events")
        sent = await self.bus.publish_many(
            [(topic, {**ev.to_dict(), "site": self.site_id}) for ev in events], timeout=5.0
        )
        self.outbox.mark_sent(TRANSPORT, [ev.seq for ev in events[:sent]], time.monotonic())
        if sent < len(events):
            raise BusError(f"the box broker took {sent} of {len(events)} event(s)")

    def _oldest_overdue(self) -> bool:
        """Has the oldest owed event waited its retry time without an ack?"""
        first = self.outbox.oldest(TRANSPORT, 1)
        return bool(first) and first[0].next_try <= time.monotonic()

    async def _idle(self) -> None:
        """Sleep until new rows, an ack, or the earliest resend is due (at most 1 s)."""
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await within(self.wake.wait(), 1.0)

    # -- acks ---------------------------------------------------------------------------------
    async def run_acks(self) -> None:
        """Central acks: ``{"id": ...}`` or ``{"ids": [...]}``; applied in small batches."""
        sub = self.bus.subscribe(down("ack"))
        while True:
            msg = await sub.get()
            ids = _ack_ids(msg)
            deadline = time.monotonic() + ACK_BATCH_S
            while len(ids) < BATCH:
                try:
                    more = await sub.get(timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    break
                ids.extend(_ack_ids(more))
            if ids:
                self.outbox.ack(TRANSPORT, ids)
                self.last_ack_ts = time.time()

    # -- heartbeat ----------------------------------------------------------------------------
    async def run_heartbeat(self) -> None:
        while True:
            self.beat("heartbeat")
            delay = self.heartbeat.next_due() - time.monotonic()
            await asyncio.sleep(min(max(0.0, delay), 1.0))
            if not self.heartbeat.due():
                continue
            seq = self.heartbeat.fired()
            status = self.status()
            payload = heartbeat_payload(
                seq=seq,
                site=self.site_id,
                uptime_s=status["uptime_s"],
                armed=status["armed"],
                open_faults=status["faults"],
                outbox=self.outbox_summary(),
                versions=status["versions"],
            )
            try:
                await self.bus.publish(up("heartbeat"), payload, timeout=5.0)
                self.last_beat_ts = time.time()
            except BusError as exc:
                log.warning("heartbeat %d not published: %s", seq, exc)

    def outbox_summary(self) -> dict[str, Any]:
        now = time.time()
        return {
            t: {
                "depth": self.outbox.depth(t),
                "oldest_s": _round(self.outbox.oldest_unacked_age_s(t, now)),
            }
            for t in self.outbox.transports
        }

    # -- link supervision ---------------------------------------------------------------------
    async def run_link(self) -> None:
        sub = self.bus.subscribe(link(self.site_id))
        while True:
            self.beat("link")
            try:
                msg = await sub.get(timeout=1.0)
            except TimeoutError:
                msg = None
            if msg is not None:
                self._link_state(msg.payload.strip() == b"1")
            elif not self.bus.connected:
                self._link_state(False)
            self._check_trouble()

    def _link_state(self, up_now: bool) -> None:
        if up_now != self.link_up:
            log.info("central link %s", "up" if up_now else "down")
            self.link_up = up_now
            self.pass_after = 0  # the backlog goes again, oldest first, at once
            self.link_changed = time.monotonic()
            self.wake.set()

    def _check_trouble(self) -> None:
        down_for = time.monotonic() - self.link_changed
        if not self.link_up and not self.in_trouble and down_for >= self.trouble_after_s:
            self.in_trouble = True
            self.journal_event(
                Event(Kind.COMM_TROUBLE, details={"path": "central", "down_s": round(down_for)})
            )
        elif self.link_up and self.in_trouble:
            self.in_trouble = False
            self.journal_event(Event(Kind.COMM_RESTORE, details={"path": "central"}))


def _ack_ids(msg: Message) -> list[str]:
    try:
        body = msg.json()
    except CommandError as exc:
        log.warning("ignored a malformed ack: %s", exc)
        return []
    if not isinstance(body, dict):
        return []
    many = body.get("ids")
    ids: list[Any] = many if isinstance(many, list) else [body.get("id")]
    return [i for i in ids if isinstance(i, str) and 0 < len(i) <= 64]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
