"""Feed the DC-09 transmitter from the outbox, strictly in journal order, one event at a time.

Order of truth: the journal holds the event, the outbox says DC-09 still owes it, and only a
trusted ACK (or a DUH, which gives it up) lets the next event go. DC-09 is acknowledged per
frame, independently of the MQTT path: an event can be delivered by one transport and still
pending on the other.

Why strictly in order: a receiver shows each zone in the state of the last message it got.
An event never overtakes an earlier one, so a restore never reaches the operator before its
alarm, and an alarm never before the restore that preceded it.

Why one retry schedule for the path, not one per event: after an outage, per-event timers
that had grown to minutes kept the backlog waiting long after the receiver was back, while
newer events went first. Here, when every receiver path has failed, the feed probes with
the oldest owed event (one try per path) every :data:`PROBE_MAX_S` seconds at most; the first
probe that gets through ends the outage and the whole backlog follows at once.

A dead or black-holed receiver is a path fault, never a stuck service: the loop beats the
watchdog at least every :data:`BEAT_S` while a send waits for its timeouts, and gives up on
a send that outlives the transmitter's own bound (:meth:`Dc09Transmitter.worst_case_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from edge.events import Event, Kind
from edge.journal import Journal
from edge.tasks import within
from edge.uplink.dc09 import Dc09Transmitter, SendResult
from edge.uplink.dc09_payload import NotTransmittable
from edge.uplink.outbox import Outbox

log = logging.getLogger(__name__)

TRANSPORT = "dc09"
BATCH = 50  # events read from the outbox and the journal per query
BEAT_S = 1.0  # the loop beats at least this often, even while a send waits
PROBE_FIRST_S = 0.5  # first probe after every path failed ...
PROBE_MAX_S = 3.0  # ... doubling up to this: the backlog leaves within seconds of a return
BOUND_SLACK_S = 5.0


class Outage:
    """Whether every receiver path is down, since when, and when to probe next. Pure."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self.since: float | None = None
        self.failures = 0
        self.next_probe = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, now: float) -> bool:
        """Record a message no path took; True if this starts the outage."""
        first = self.since is None
        if first:
            self.since = now
        self.failures += 1
        delay = min(PROBE_MAX_S, PROBE_FIRST_S * 2.0 ** min(self.failures - 1, 16))
        self.next_probe = now + delay * self._rng.uniform(0.5, 1.0)
        return first

    def probe_due(self, now: float) -> bool:
        return now >= self.next_probe

    def ended(self, now: float) -> float | None:
        """A path answered: the outage's length in seconds, None if there was none."""
        if self.since is None:
            return None
        length, self.since, self.failures = now - self.since, None, 0
        return length


class Dc09Feed:
    def __init__(
        self,
        *,
        transmitter: Dc09Transmitter,
        journal: Journal,
        outbox: Outbox,
        journal_event: Callable[[Event], None],
        beat: Callable[[str], None],
    ) -> None:
        self.tx = transmitter
        self.journal = journal
        self.outbox = outbox
        self.journal_event = journal_event
        self.beat = beat
        self.wake = asyncio.Event()
        self.outage = Outage()

    def notify(self) -> None:
        self.wake.set()

    def path_changed(self, path: str, up: bool) -> None:
        """Transmitter callback: a receiver path failed or came back (once per change).

        A failure names its reason (no answer, NAK, or an answer that was not trusted), so
        an operator can tell a dead receiver from one whose answers are refused.
        """
        if up:
            self.journal_event(Event(Kind.RECEIVER_PATH_RESTORE, details={"path": path}))
            return
        reason = self.tx.path_fault(path) or "unknown"
        self.journal_event(Event(Kind.RECEIVER_PATH_FAIL, details={"path": path, "reason": reason}))

    # -- sending ------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            self._beat()
            self.outbox.catch_up(self.journal)
            now = time.monotonic()
            if self.outage.down and not self.outage.probe_due(now):
                await self._idle(self.outage.next_probe - now)
                continue
            items = self.outbox.oldest(TRANSPORT, BATCH)
            if items:
                await self._drain(items)
            elif self.outage.down:
                await self._probe_with_poll()
            else:
                await self._idle(BEAT_S)

    async def _drain(self, items: list[Any]) -> None:
        """Send in journal order; stop at the first event no path takes."""
        events = {e.seq: e for e in self.journal.by_seqs([i.seq for i in items])}
        for item in items:
            self._beat()
            event = events.get(item.seq)
            if event is None:
                self.outbox.reject(TRANSPORT, item.seq, "no longer in the journal")
            elif not await self._send(item.seq, event):
                return

    async def _send(self, seq: int, event: Event) -> bool:
        """One event; False when no path took it (it stays first in line)."""
        tries = 1 if self.outage.down else None
        try:
            result = await self._bounded(self.tx.send(event, tries=tries), "send")
        except NotTransmittable as exc:
            self.outbox.reject(TRANSPORT, seq, str(exc))
            return True
        if result.outcome == "failed":
            self._failed(result)
            return False
        self._answered()
        if result.outcome == "ack":
            self.outbox.ack(TRANSPORT, [event.id])
        else:
            self._rejected(seq, event, result)
        return True

    def _rejected(self, seq: int, event: Event, result: SendResult) -> None:
        self.outbox.reject(TRANSPORT, seq, result.detail)
        details = {
            "event": event.id,
            "seq": seq,
            "kind": event.kind.value,
            "receiver": result.receiver,
            "reason": result.detail,
        }
        self.journal_event(Event(Kind.TRANSMISSION_REJECTED, details=details))

    async def _probe_with_poll(self) -> None:
        """Nothing is owed but the paths are down: a NULL poll, one try per path."""
        result = await self._bounded(self.tx.poll(tries=1), "poll")
        if result.ok:
            self._answered()
        else:
            self._failed(result)

    # -- outage ---------------------------------------------------------------------------------
    def _failed(self, result: SendResult) -> None:
        if self.outage.failed(time.monotonic()):
            log.warning(
                "DC-09: no receiver path takes messages (%s); %d event(s) wait in journal "
                "order, each path is tried again every %g s at most",
                result.detail,
                self.outbox.depth(TRANSPORT),
                PROBE_MAX_S,
            )

    def _answered(self) -> None:
        length = self.outage.ended(time.monotonic())
        if length is not None:
            log.warning(
                "DC-09: a receiver path answers again after %.0f s; %d event(s) follow now",
                length,
                self.outbox.depth(TRANSPORT),
            )
            self.wake.set()

    # -- bounded waits ----------------------------------------------------------------------------
    async def _bounded(self, work: Coroutine[Any, Any, SendResult], what: str) -> SendResult:
        """Run one send or poll, beating the watchdog while it waits on the receivers.

        The transmitter bounds every step with its timeouts; the limit here (waiting for
        the link, which a supervision poll may hold, then the message itself) only stops a
        send that outlives those bounds, so the loop never hangs on a receiver.
        """
        limit = 2 * self.tx.worst_case_s() + self.tx.worst_case_s(1) + BOUND_SLACK_S
        task = asyncio.create_task(work, name=f"dc09-{what}")
        deadline = time.monotonic() + limit
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=BEAT_S)
                if done:
                    return task.result()
                self._beat()
                if time.monotonic() >= deadline:
                    break
        finally:
            if not task.done():
                task.cancel()
        await asyncio.wait({task}, timeout=BEAT_S)
        log.error("DC-09 %s took longer than its bound of %.0f s: cancelled", what, limit)
        return SendResult(False, "failed", "", 0, f"no outcome within {limit:.0f} s")

    async def _idle(self, seconds: float) -> None:
        """Sleep until new journal rows or a path change, at most ``seconds`` (≤ BEAT_S)."""
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await within(self.wake.wait(), max(0.01, min(seconds, BEAT_S)))

    def _beat(self) -> None:
        self.beat("dc09")

    # -- supervision ----------------------------------------------------------------------------
    async def run_supervision(self) -> None:
        """NULL polls every ``poll_interval_s``; while every path is down the probes of
        :meth:`run` supervise instead, so a dead receiver gets one probe at a time."""
        while True:
            await asyncio.sleep(self.tx.poll_interval_s)
            if self.outage.down:
                continue
            result = await self.tx.supervise_once()
            if result.ok:
                continue
            log.warning("DC-09 supervision poll failed on every path: %s", result.detail)
            self._failed(result)
