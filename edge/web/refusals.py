"""Refused logins, summarised: at most two audit rows per client address per minute.

A refused login (401, 429, or 503 when too many checks wait) is worth an audit row, but one
row per refusal lets a client without a password flood the box bus and the journal (an audit
measured 674 rows/s from one client; the bus fell 6,700 events behind and a panic alarm got
no clip). So the first refusal from an address is reported at once — an installer sees it in
the journal — and the ones that follow within ``window`` seconds are counted (with the user
names and cameras tried) and reported as one summary row when the window ends.

Bounds: at most ``max_addresses`` addresses are followed at once and at most
``max_immediate`` first refusals are reported at once per window; refusals beyond either are
counted in one row for all other addresses (``remote`` ``"*"``), also once per window. Every
row reaches edge-alarm as a ``live_refused`` event with ``count`` and ``users``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from edge.video.camera import wall_iso

log = logging.getLogger(__name__)

WINDOW_S = 60.0
MAX_ADDRESSES = 256
MAX_IMMEDIATE = 10  # first refusals reported at once per window, all addresses together
MAX_NAMES = 8  # user names (and cameras) kept per row
MAX_NAME = 40  # characters of one user name kept
OTHERS = "*"

Publish = Callable[[dict[str, Any]], None]


@dataclasses.dataclass
class _Tally:
    """Refusals not reported yet for one address (or for all the others)."""

    since: float  # monotonic start of the window
    start_wall: float = 0.0
    end_wall: float = 0.0
    count: int = 0
    users: list[str] = dataclasses.field(default_factory=list)
    cameras: list[str] = dataclasses.field(default_factory=list)
    statuses: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    addresses: set[str] = dataclasses.field(default_factory=set)

    def add(self, user: str, camera: str, status: int, wall: float) -> None:
        if self.count == 0:
            self.start_wall = wall
        self.count += 1
        self.end_wall = wall
        self.statuses[status] += 1
        _remember(self.users, user)
        _remember(self.cameras, camera)


class RefusalLog:
    """Collects refused logins; ``tick`` (every second or so) sends the summaries that are due."""

    def __init__(
        self,
        publish: Publish,
        *,
        window: float = WINDOW_S,
        max_addresses: int = MAX_ADDRESSES,
        max_immediate: int = MAX_IMMEDIATE,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.publish, self.window, self.clock, self.wall = publish, window, clock, wall
        self.max_addresses, self.max_immediate = max_addresses, max_immediate
        self._tallies: dict[str, _Tally] = {}
        self._others: _Tally | None = None
        self._immediate: collections.deque[float] = collections.deque(maxlen=max_immediate)
        self.total = 0  # refusals seen since start
        self.rows = 0  # rows published since start

    def refused(self, remote: str, user: str, status: int, camera: str = "") -> None:
        """One refused request from ``remote`` trying ``user`` (and ``camera`` when WHEP)."""
        now, wall = self.clock(), self.wall()
        self.total += 1
        user = "".join(c for c in user[:MAX_NAME] if c.isprintable()) or "?"
        tally = self._tallies.get(remote)
        if tally is not None:
            tally.add(user, camera, status, wall)
            return
        if len(self._tallies) < self.max_addresses:
            self._tallies[remote] = tally = _Tally(since=now)
            if self._may_report_now(now):
                first = _Tally(since=now)
                first.add(user, camera, status, wall)
                self._send(remote, first)
                return
            tally.add(user, camera, status, wall)
            return
        if self._others is None:
            self._others = _Tally(since=now)
        self._others.add(user, camera, status, wall)
        self._others.addresses.add(remote)
        if len(self._others.addresses) > 4096:  # a count, not a list of every address
            self._others.addresses.pop()

    def tick(self) -> None:
        """Send the summaries of windows that ended; forget addresses that went quiet."""
        now = self.clock()
        for remote, tally in list(self._tallies.items()):
            if now - tally.since >= self.window:
                del self._tallies[remote]
                if tally.count:
                    self._send(remote, tally)
        if self._others is not None and now - self._others.since >= self.window:
            others, self._others = self._others, None
            self._send(OTHERS, others)

    def flush(self) -> None:
        """Send every pending summary now (the server is stopping)."""
        for remote, tally in self._tallies.items():
            if tally.count:
                self._send(remote, tally)
        self._tallies.clear()
        if self._others is not None:
            others, self._others = self._others, None
            self._send(OTHERS, others)

    def _may_report_now(self, now: float) -> bool:
        if len(self._immediate) == self.max_immediate and now - self._immediate[0] < self.window:
            return False
        self._immediate.append(now)
        return True

    def _send(self, remote: str, tally: _Tally) -> None:
        statuses = ", ".join(f"{_WORDS.get(s, s)} ×{n}" for s, n in sorted(tally.statuses.items()))
        who = f"{len(tally.addresses)} other address(es)" if remote == OTHERS else f"from {remote}"
        reason = (
            f"{tally.count} refused login(s) {who} as {', '.join(tally.users)}: {statuses}"
            if tally.count > 1
            else f"refused login {who} as {tally.users[0]}: {statuses}"
        )
        body: dict[str, Any] = {
            "v": 1,
            "event": "refused",
            "code": "unauthorised",
            "via": "lan",
            "operator": f"lan:{tally.users[0]}",
            "remote": remote,
            "count": tally.count,
            "users": list(tally.users),
            "start": wall_iso(tally.start_wall),
            "end": wall_iso(tally.end_wall),
            "reason": reason,
            "ts": wall_iso(self.wall()),
        }
        if tally.cameras:
            body["camera"] = tally.cameras[-1]
            body["cameras"] = list(tally.cameras)
        if remote == OTHERS:
            body["addresses"] = len(tally.addresses)
        self.rows += 1
        log.warning("web: %s", reason)
        try:
            self.publish(body)
        except Exception:  # the audit must never break the web server
            log.exception("web: refused-login summary not reported")


_WORDS = {401: "401 unauthorised", 429: "429 waiting after failures", 503: "503 too many at once"}


def _remember(names: list[str], name: str) -> None:
    if name and name not in names and len(names) < MAX_NAMES:
        names.append(name)
