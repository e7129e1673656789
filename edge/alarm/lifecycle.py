"""edge-alarm's start and stop, as systemd and the journal see them.

READY=1 is a promise: units ordered after edge-alarm (and `edge panel`, the web page, the
central station) may send it commands at once. So it is said only when every loop's box-bus
subscription has been acknowledged by the broker — a command published right after READY
is received. A box broker that does not answer must not keep the alarm from starting (its
inputs, siren and DC-09 path run without the bus), so the wait is bounded well inside
systemd's start timeout; READY then says what is missing.

A clean stop (SIGTERM, a restart command) journals ``service_stopped`` with its reason and
leaves a marker (:class:`edge.system.StopMarker`); the next start journals
``service_started`` saying whether the previous run stopped cleanly. An operator, on the box
(`edge events`) or at the central station, can then tell a stop from a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge import __version__, system
from edge.bus import Bus
from edge.events import Event, Kind
from edge.tasks import within

log = logging.getLogger(__name__)

MARKER_FILE = "clean-stop"
READY_WAIT_S = 5.0  # edge-alarm's unit has TimeoutStartSec=10s
STOP_FLUSH_S = 1.0  # at a clean stop, time for the bus publisher to carry service_stopped


class Lifecycle:
    """Start and stop records of one edge-alarm process, and its READY notification."""

    def __init__(
        self,
        data_dir: Path,
        stop: asyncio.Event,
        journal_one: Callable[[Event], None],
        journaled_seq: Callable[[], int],
        published_seq: Callable[[], int],
    ) -> None:
        self.marker = system.StopMarker(data_dir / MARKER_FILE)
        self.stop = stop
        self.journal_one = journal_one
        self.journaled_seq = journaled_seq
        self.published_seq = published_seq
        self.reason: str | None = None
        self.started = time.monotonic()
        self.ready = asyncio.Event()

    # -- start ----------------------------------------------------------------------------
    def journal_start(self) -> None:
        """service_started, saying how the previous run ended (the marker is used up)."""
        first = self.journaled_seq() == 0
        details = start_details(self.marker.take(), journal_was_empty=first)
        self.journal_one(Event(Kind.SERVICE_STARTED, details=details))

    async def announce_ready(self, bus: Bus, status: str) -> None:
        """Supervised loop: READY=1 once every subscription is acknowledged (or READY_WAIT_S
        passed), then idle for ever (a supervised loop that returns ends the service)."""
        await asyncio.sleep(0)  # the loops started with this one subscribe on their first step
        pending = await unacknowledged(bus, READY_WAIT_S)
        if pending:
            status += f"; box bus not answering yet ({len(pending)} subscription(s) pending)"
            log.warning(
                "READY after %.0f s without the box broker's acknowledgement of %s: commands "
                "sent now may be lost until it answers",
                READY_WAIT_S,
                ", ".join(pending),
            )
        system.ready(status)
        log.info("edge-alarm %s ready: %s", __version__, status)
        self.ready.set()
        await asyncio.get_running_loop().create_future()

    # -- stop -----------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop cleanly for ``reason`` (the first reason given wins)."""
        if self.reason is None:
            self.reason = reason
            log.info("stopping: %s", reason)
        self.stop.set()

    async def journal_stop(self, failure: BaseException | None) -> None:
        """service_stopped with the reason; a clean stop also leaves the marker. Called while
        the loops still run when possible, so the bus publisher can carry the event out."""
        clean = failure is None and self.reason is not None
        reason = (self.reason if failure is None else f"failure: {failure!r}") or "unknown"
        details = {
            "reason": reason,
            "clean": clean,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
        }
        event = Event(Kind.SERVICE_STOPPED, details=details)
        try:
            self.journal_one(event)
        except Exception as exc:  # a stop must never fail on its own record
            log.error("service_stopped not journaled: %s", exc)
            return
        if clean:
            self.marker.write(reason, version=__version__)
        if failure is None:
            target = self.journaled_seq()
            await _until(lambda: self.published_seq() >= target, STOP_FLUSH_S)


def start_details(previous: dict[str, Any] | None, journal_was_empty: bool) -> dict[str, Any]:
    """What service_started says about the run before it."""
    details: dict[str, Any] = {"version": __version__}
    if previous is not None:
        details["previous_stop"] = "clean"
        details["previous_reason"] = str(previous.get("reason", "unknown"))[:200]
    elif journal_was_empty:
        details["previous_stop"] = "none"  # the first start of this box
    else:
        details["previous_stop"] = "unclean"  # killed, crashed, watchdog or power cut
    return details


async def unacknowledged(bus: Bus, timeout: float) -> list[str]:
    """Filters of ``bus`` whose subscription the broker has not acknowledged within
    ``timeout`` seconds (all of them waited for together)."""
    subs = bus.subscriptions()
    deadline = time.monotonic() + timeout
    done = await asyncio.gather(
        *(sub.wait_subscribed(max(0.0, deadline - time.monotonic())) for sub in subs)
    )
    return sorted({sub.topic_filter for sub, ok in zip(subs, done, strict=True) if not ok})


async def _until(check: Callable[[], bool], timeout: float) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.02)

    try:
        await within(poll(), timeout)
    except TimeoutError:
        log.info("service_stopped stays in the journal; it is published at the next start")
