"""Feed the DC-09 transmitter from the outbox; each receiver acknowledgement removes one row.

DC-09 is acknowledged per frame, independently of the MQTT path: an event can be delivered
by one transport and still pending on the other. ACK → done; DUH (the receiver does not
know the event) → given up and journaled, never retried forever; no answer, or an answer
that is not trusted (see :mod:`edge.uplink.dc09_answer`) → resent later with the outbox's
backoff, after the transmitter has tried every path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from edge.events import Event, Kind
from edge.journal import Journal
from edge.tasks import within
from edge.uplink.dc09 import Dc09Transmitter
from edge.uplink.dc09_payload import NotTransmittable
from edge.uplink.outbox import Outbox

log = logging.getLogger(__name__)

TRANSPORT = "dc09"


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

    async def run(self) -> None:
        while True:
            self.beat("dc09")
            self.outbox.catch_up(self.journal)
            items = self.outbox.due(TRANSPORT, time.monotonic(), limit=20)
            if not items:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await within(self.wake.wait(), 1.0)
                continue
            events = {e.seq: e for e in self.journal.by_seqs([i.seq for i in items])}
            for item in items:
                event = events.get(item.seq)
                if event is None:
                    self.outbox.reject(TRANSPORT, item.seq, "no longer in the journal")
                else:
                    await self._send(item.seq, event)

    async def _send(self, seq: int, event: Event) -> None:
        try:
            result = await self.tx.send(event)
        except NotTransmittable as exc:
            self.outbox.reject(TRANSPORT, seq, str(exc))
            return
        if result.outcome == "ack":
            self.outbox.ack(TRANSPORT, [event.id])
        elif result.outcome == "duh":
            self.outbox.reject(TRANSPORT, seq, result.detail)
            self.journal_event(
                Event(
                    Kind.TRANSMISSION_REJECTED,
                    details={
                        "event": event.id,
                        "seq": seq,
                        "kind": event.kind.value,
                        "receiver": result.receiver,
                        "reason": result.detail,
                    },
                )
            )
        else:
            log.warning("DC-09: event #%d not delivered (%s); retrying later", seq, result.detail)
            self.outbox.mark_sent(TRANSPORT, [seq], time.monotonic())

    async def run_supervision(self) -> None:
        await self.tx.run_supervision()
