"""The heartbeat (cyclic test): when to send it and what it says.

The central station raises a "box silent" alarm when a heartbeat is late, so beats must not
drift: beat k is due at ``start + k * interval`` on the monotonic clock, computed from k, never
by adding the interval to the previous send time (which accumulates every scheduling delay).
After a pause (event loop blocked, system suspended) the missed beats are skipped, not sent in
a burst: one late beat tells the central station the box is back, the rest would only be noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from edge.events import utc_now_iso

PAYLOAD_VERSION = 1


class HeartbeatScheduler:
    """Beat times on a fixed grid; the first beat is due at once (the box announces itself)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval_s > 0:
            raise ValueError(f"heartbeat interval must be > 0 s, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self._clock = clock
        self._start = clock()
        self._k = 0  # grid index of the next beat
        self._seq = 0

    def next_due(self) -> float:
        """Clock time of the next beat (may be in the past when one is due)."""
        return self._start + self._k * self.interval_s

    def due(self) -> bool:
        return self._clock() >= self.next_due()

    def fired(self) -> int:
        """Record that a beat was sent; returns its seq (1, 2, ...).

        The next beat is the first grid point after now, so beats missed during a pause are
        skipped rather than sent back to back.
        """
        self._seq += 1
        elapsed = self._clock() - self._start
        self._k = max(self._k + 1, math.floor(elapsed / self.interval_s) + 1)
        return self._seq


def heartbeat_payload(
    *,
    seq: int,
    site: str,
    uptime_s: float,
    armed: dict[str, str],
    open_faults: list[dict[str, Any]],
    outbox: dict[str, dict[str, Any]],
    versions: dict[str, str],
    ts: str | None = None,
) -> dict[str, Any]:
    """The JSON body published on ``sites/<site>/heartbeat``.

    ``outbox`` is :meth:`Outbox.stats`: per transport the number of events still owed
    (``depth``), the age of the oldest one (``oldest_s``, null when none is owed) and how many
    were given up (``rejected``) — what the central station needs to tell "alive but
    backlogged" from "alive and up to date".
    """
    if seq < 1:
        raise ValueError(f"heartbeat seq starts at 1, got {seq}")
    return {
        "v": PAYLOAD_VERSION,
        "site": site,
        "seq": seq,
        "ts": ts if ts is not None else utc_now_iso(),
        "uptime_s": round(max(0.0, uptime_s), 1),
        "armed": {partition: armed[partition] for partition in sorted(armed)},
        "faults": [dict(fault) for fault in open_faults],
        "outbox": {name: _outbox_entry(stats) for name, stats in sorted(outbox.items())},
        "versions": dict(versions),
    }


def _outbox_entry(stats: dict[str, Any]) -> dict[str, Any]:
    oldest = stats.get("oldest_s")
    return {
        "depth": int(stats.get("depth", 0)),
        "oldest_s": None if oldest is None else round(float(oldest), 1),
        "rejected": int(stats.get("rejected", 0)),
    }
