"""SIA DC-09 transmitter: events to professional alarm receivers over TCP.

The transmitter keeps one connection to the receiver in use and sends one frame at a time.
Each message is tried a bounded number of times per receiver (``retries + 1``, or once when
the caller is only probing a path it knows is down), then on the next receiver in the order
primary → secondary → backup, so a dead receiver costs seconds, never an alarm stuck in a
loop: :meth:`Dc09Transmitter.worst_case_s` is the bound. Outcomes are the caller's to act on:

- ``ack``: the receiver took the event;
- ``duh``: the receiver understood the frame but refuses its content — resending the same
  bytes can never succeed, so the event is given up and reported as rejected;
- ``failed``: no receiver answered; the outbox keeps the event and tries again later.

Sequence numbers come from :class:`~edge.uplink.dc09_sequence.SequenceStore`, on disk when
the caller gives a file, so they continue across restarts. An event that was not delivered
keeps its number when it is sent again: a receiver that did take it but whose ACK was lost
recognises the repeat by its number, as DC-09 intends.

A NAK carries the receiver's clock: the offset is learnt per receiver, applied to every
later timestamp, and the message is resent at once. NULL supervision polls prove the path
in use, fail over when it is gone, and bring traffic back to the primary when it answers
again. Path changes are reported through ``on_path_change(path, up)`` for the journal,
once per change, with the reason at hand in :meth:`Dc09Transmitter.path_fault`.

An answer only counts when :mod:`edge.uplink.dc09_answer` finds it is the answer to the
message sent (sequence, account, encryption, timestamp window); an untrusted answer is a
failed attempt like a silent receiver, so a path that keeps answering wrongly is failed
over and reported, and its events stay in the outbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edge.config.dc09 import Dc09Config, load_key, site_problems
from edge.errors import ConfigError
from edge.events import Event
from edge.uplink.dc09_answer import Sent, check, delivered
from edge.uplink.dc09_crypto import Dc09Cipher
from edge.uplink.dc09_frame import Header, ReplyError, body, format_timestamp, frame
from edge.uplink.dc09_link import LinkError, ReceiverLink
from edge.uplink.dc09_payload import NULL_MESSAGE, Message, Numbering, event_message
from edge.uplink.dc09_sequence import SequenceStore

if TYPE_CHECKING:
    from edge.config.site import SiteConfig

log = logging.getLogger(__name__)

Outcome = Literal["ack", "duh", "failed"]
BACKOFF_STEP_S = 0.2
BACKOFF_MAX_S = 2.0
CLOCK_SLACK_S = 2  # NAK timestamps have 1 s resolution; within this the clock is not at fault


@dataclasses.dataclass(frozen=True)
class SendResult:
    """What became of one message; ``receiver`` is the path that answered ("" if none)."""

    ok: bool
    outcome: Outcome
    receiver: str
    attempts: int
    detail: str


class Dc09Transmitter:
    """Sends events and supervision polls to the site's DC-09 receivers."""

    def __init__(
        self,
        cfg: Dc09Config,
        site: SiteConfig,
        on_path_change: Callable[[str, bool], None] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sequence_file: Path | None = None,
    ) -> None:
        """``sequence_file``: where message numbers are reserved so that they continue
        across restarts (see :mod:`edge.uplink.dc09_sequence`); None keeps them in memory."""
        problems = site_problems(cfg, site)
        try:
            key = load_key(cfg)
        except ValueError as exc:
            problems.append(f"dc09.key_file: {exc}")
            key = None
        if problems:
            raise ConfigError("dc09", problems)
        self._cfg = cfg
        self._numbers = Numbering(cfg, site)
        self._header = Header(cfg.receiver, cfg.line, cfg.account)
        self._cipher = Dc09Cipher(key) if key else None
        self._on_path_change = on_path_change
        self._clock = clock
        paths = [("primary", cfg.primary), ("secondary", cfg.secondary), ("backup", cfg.backup)]
        self._links = [ReceiverLink(n, r, cfg.ack_timeout_s) for n, r in paths if r is not None]
        self._up = {link.name: True for link in self._links}
        self._faults: dict[str, str] = {}  # path → why its last message failed
        self._current = 0
        self._seq = SequenceStore(sequence_file)
        self._held: tuple[str, int] | None = None  # (event id, its number) until delivered
        self._lock = asyncio.Lock()

    @property
    def poll_interval_s(self) -> float:
        return float(self._cfg.poll_interval_s)

    @property
    def current_path(self) -> str:
        return self._links[self._current].name

    def path_fault(self, path: str) -> str:
        """Why the last message on ``path`` failed ("" if none has): for the path event."""
        return self._faults.get(path, "")

    def worst_case_s(self, tries: int | None = None) -> float:
        """The longest one :meth:`send` or :meth:`poll` can take once it holds the link:
        every path, every try, each with its connect and answer timeouts and backoff."""
        tries = self._cfg.retries + 1 if tries is None else tries
        per_try = 2 * self._cfg.ack_timeout_s + BACKOFF_MAX_S
        return len(self._links) * tries * per_try

    async def send(self, event: Event, *, tries: int | None = None) -> SendResult:
        """Deliver one event; NotTransmittable (ValueError) if its kind has no code.

        ``tries`` per path (default ``retries + 1``): 1 to probe a path believed down.
        """
        message = event_message(event, self._cfg, self._numbers)
        async with self._lock:
            result = await self._deliver(message, tries, event.id)
        probe = tries is not None and tries < self._cfg.retries + 1
        log.log(
            logging.INFO if result.ok else logging.DEBUG if probe else logging.WARNING,
            "DC-09 event %s (%s): %s via %s after %d attempt(s): %s",
            event.id,
            event.kind.value,
            result.outcome,
            result.receiver or "-",
            result.attempts,
            result.detail,
        )
        return result

    async def poll(self, *, tries: int | None = None) -> SendResult:
        """One NULL supervision poll on the current path, failing over if it does not answer."""
        async with self._lock:
            return await self._deliver(NULL_MESSAGE, tries)

    async def supervise_once(self) -> SendResult:
        """Bring traffic back to the primary if it answers again, then poll the current path."""
        async with self._lock:
            if self._current != 0:
                await self._probe_primary()
            return await self._deliver(NULL_MESSAGE)

    async def close(self) -> None:
        async with self._lock:
            for link in self._links:
                await link.close()

    async def _deliver(
        self, message: Message, tries: int | None = None, key: str | None = None
    ) -> SendResult:
        """Send ``message`` on each path in turn until one takes or refuses it; ``key`` (the
        event id) keeps the message's number for its next send if no path takes it."""
        seq = await self._number(key)
        attempts, failures = 0, []
        for index in self._order():
            link = self._links[index]
            outcome, used, detail = await self._try_link(link, message, seq, tries)
            attempts += used
            if outcome != "failed":
                self._held = None
                await self._switch_to(index)
                self._mark(link.name, up=True)
                return SendResult(outcome == "ack", outcome, link.name, attempts, detail)
            failures.append(f"{link.name} {link.receiver}: {detail}")
            self._faults[link.name] = detail
            self._mark(link.name, up=False)
        if key is not None:
            self._held = (key, seq)
        await self._switch_to(0)  # next message starts again with the primary
        return SendResult(False, "failed", "", attempts, "; ".join(failures))

    async def _number(self, key: str | None) -> int:
        """The number of the message: the one it had if it is the event last left
        undelivered, else the next one (reserving a block on disk off the event loop)."""
        if key is not None and self._held is not None and self._held[0] == key:
            return self._held[1]
        if self._seq.exhausted:
            await asyncio.to_thread(self._seq.reserve)
        return self._seq.take()

    def _order(self) -> list[int]:
        """The current path first, then the following ones, wrapping round."""
        count = len(self._links)
        return [(self._current + i) % count for i in range(count)]

    async def _try_link(
        self, link: ReceiverLink, message: Message, seq: int, tries: int | None = None
    ) -> tuple[Outcome, int, str]:
        tries = self._cfg.retries + 1 if tries is None else tries
        sent = Sent(seq, self._header, encrypted=self._cipher is not None)
        detail = ""
        for attempt in range(1, tries + 1):
            stamp = format_timestamp(self._clock() + link.offset_s)
            tail = message.tail(stamp, link.offset_s)
            text = body(message.id, seq, self._header, tail, self._cipher)
            try:
                reply = await link.exchange(frame(text), seq, self._cipher)
                check(reply, sent, self._clock() + link.offset_s)
            except LinkError as exc:
                detail = str(exc)
                if attempt < tries:
                    await _backoff(attempt)
                continue
            except ReplyError as exc:
                log.warning("DC-09 %s receiver %s: %s", link.name, link.receiver, exc)
                detail = f"answer not trusted: {exc}"
                continue
            if delivered(reply):
                return "ack", attempt, reply.kind
            if reply.kind == "DUH":
                return "duh", attempt, "DUH: the receiver refuses this message; not resent"
            detail = self._on_nak(link, reply.timestamp)
        return "failed", tries, detail

    def _on_nak(self, link: ReceiverLink, receiver_time: float | None) -> str:
        if receiver_time is None:
            return "NAK without time: the receiver may not know this account or key"
        offset = round(receiver_time - self._clock())
        if abs(offset - link.offset_s) <= CLOCK_SLACK_S:
            return "NAK although our clocks agree: check the account and key with the station"
        log.warning(
            "DC-09 %s receiver %s clock differs from ours by %+d s: timestamps adjusted",
            link.name,
            link.receiver,
            offset,
        )
        link.offset_s = offset
        return f"NAK: timestamp refused, clock offset now {offset:+d} s"

    async def _probe_primary(self) -> None:
        primary = self._links[0]
        seq = await self._number(None)
        outcome, _, detail = await self._try_link(primary, NULL_MESSAGE, seq, 1)
        if outcome == "ack":
            log.info("DC-09 primary receiver %s answers again: back to it", primary.receiver)
            await self._switch_to(0)
            self._mark(primary.name, up=True)
        else:
            await primary.close()
            log.debug("DC-09 primary receiver still unavailable: %s", detail)

    async def _switch_to(self, index: int) -> None:
        if index == self._current:
            return
        old, new = self._links[self._current], self._links[index]
        log.warning("DC-09 path change: %s → %s (%s)", old.name, new.name, new.receiver)
        await old.close()
        self._current = index

    def _mark(self, name: str, *, up: bool) -> None:
        if self._up[name] == up:
            return
        self._up[name] = up
        log.warning("DC-09 path %s %s", name, "restored" if up else "failed")
        if self._on_path_change is None:
            return
        try:
            self._on_path_change(name, up)
        except Exception:
            log.exception("on_path_change(%s, %s) failed", name, up)


async def _backoff(attempt: int) -> None:
    """Jittered pause before reconnecting, so a refusing receiver is not hammered."""
    delay = min(BACKOFF_STEP_S * attempt, BACKOFF_MAX_S)
    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
