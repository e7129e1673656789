"""edge-alarm's watch over the data disk: a full disk is a reported fault, never a stop.

The journal and the outbox already survive a full disk on their own (reserve, then memory;
see :mod:`edge.disk`, :mod:`edge.journal_tail`, :mod:`edge.uplink.outbox_memory`). This loop
does what they cannot do from inside one write:

1. write back what they hold in memory, journal first (the outbox never records progress the
   journal's file does not hold yet), as soon as space is back;
2. every CHECKPOINT_EVERY_S, empty both write-ahead logs (``wal_checkpoint(TRUNCATE)``);
3. make the disk reserve again once there is room for it;
4. judge the disk — full while anything is held in memory, while the reserve is missing, or
   while less than LOW_WATER_BYTES are free — and journal ``disk_full`` on the way in and
   ``disk_full_restore`` (how long, most events held, events lost) on the way out.

It ticks every CHECK_S, and at once when the journal reports a write it had to hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.disk import LOW_WATER_BYTES, Reserve, free_bytes
from edge.events import Event, Kind, utc_now_iso
from edge.journal import Journal
from edge.tasks import within

if TYPE_CHECKING:
    from edge.uplink.outbox import Outbox

log = logging.getLogger(__name__)

CHECK_S = 1.0
CHECKPOINT_EVERY_S = 60.0


class DiskWatch:
    """The data disk's fault state, and the loop that keeps the files healthy."""

    def __init__(
        self,
        data_dir: Path,
        journal: Journal,
        outbox: Outbox | None,
        journal_event: Callable[[Event], None],
        resave: Callable[[], None],
    ) -> None:
        self.data_dir = data_dir
        self.journal, self.outbox = journal, outbox
        self.journal_event, self.resave = journal_event, resave
        self.reserve = Reserve(data_dir)
        self.reserve.ensure()
        self.full_since: float | None = None  # monotonic
        self.full_ts: str | None = None
        self._lost_before = 0
        self._next_checkpoint = time.monotonic() + CHECKPOINT_EVERY_S
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        journal.on_disk_full = self.wake

    def wake(self) -> None:
        """A write had to be held in memory: judge the disk now (any thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, beat: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            beat()
            self.tick()
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), CHECK_S)
            self._wake.clear()

    def tick(self) -> None:
        written = self.journal.flush()
        if self.outbox is not None:
            written = self.outbox.flush(self.journal) and written
        if written:
            self.reserve.ensure()
        now = time.monotonic()
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + CHECKPOINT_EVERY_S
            self.journal.checkpoint()
            if self.outbox is not None:
                self.outbox.checkpoint()
        self._judge(now)

    def _held(self) -> dict[str, int]:
        held = {"journal": self.journal.held()}
        if self.outbox is not None:
            held["outbox"] = self.outbox.held()
        return held

    def _judge(self, now: float) -> None:
        free = free_bytes(self.data_dir)
        held = self._held()
        full = any(held.values()) or not self.reserve.present() or 0 <= free < LOW_WATER_BYTES
        if full and self.full_since is None:
            self.full_since, self.full_ts = now, utc_now_iso()
            self._lost_before = self.journal.lost()
            self.journal.held_peak(reset=True)
            log.error(
                "data disk %s full (%d bytes free): alarms go on, held in memory until "
                "space is back; free space there (see docs/maintenance.md)",
                self.data_dir, free,
            )  # fmt: skip
            details = {"path": str(self.data_dir), "free_bytes": free, "held": held}
            self.journal_event(Event(Kind.DISK_FULL, details=details))
        elif not full and self.full_since is not None:
            details = {
                "path": str(self.data_dir),
                "free_bytes": free,
                "duration_s": round(now - self.full_since, 1),
                "held_max": self.journal.held_peak(),
                "lost": self.journal.lost() - self._lost_before,
            }
            self.full_since, self.full_ts = None, None
            log.warning("data disk %s has space again: %s", self.data_dir, details)
            self._resave()
            self.journal_event(Event(Kind.DISK_FULL_RESTORE, details=details))

    def _resave(self) -> None:
        try:
            self.resave()
        except OSError as exc:
            log.error("could not save the state the full disk refused: %s", exc)

    # -- what the status and the heartbeat show -------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "state": "ok" if self.full_since is None else "full",
            "path": str(self.data_dir),
            "since": self.full_ts,
            "free_bytes": free_bytes(self.data_dir),
            "reserve": self.reserve.present(),
            "held": self._held(),
            "lost": self.journal.lost(),
            "readers_locked_out": self.journal.exclusive,
        }

    def faults(self) -> list[dict[str, Any]]:
        return [] if self.full_since is None else [{"kind": Kind.DISK_FULL.value}]
