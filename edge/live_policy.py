"""When the central station may look: the site's live-view access policy (CNIL proportionality).

Decided by edge-alarm, from its journal, at the moment a ``cmd/live`` or ``cmd/patrol``
arrives: the journal is the one record of alarms and disarms that survives restarts, so a
box that rebooted during an incident still lets the operator verify it.

- ``always``: a verified command suffices;
- ``after_alarm``: an alarm or tamper event (not a restore) within ``window_minutes``;
- ``incident``: an alarm or tamper opens an incident on its partition (a site-wide one when it
  has none); disarming that partition — any partition for a site-wide one — closes it, and
  the window runs from the close. Incidents older than INCIDENT_LOOKBACK are not searched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from edge.config.live import LiveConfig
from edge.events import Category, Event, Kind
from edge.journal_schema import parse_iso

INCIDENT_LOOKBACK = dt.timedelta(hours=24)
SCAN_LIMIT = 5000  # events read per decision, newest first
ALARMING = (Category.ALARM, Category.TAMPER)


def is_alarm(event: Event) -> bool:
    return event.category in ALARMING and not event.kind.value.endswith("_restore")


def refusal(live: LiveConfig, events: Sequence[Event], now: dt.datetime) -> str | None:
    """None when live view is allowed now, else the sentence an operator reads.

    ``events`` are journal events in order, covering at least :func:`lookback`.
    """
    window = dt.timedelta(minutes=live.window_minutes)
    if live.policy == "always":
        return None
    if live.policy == "after_alarm":
        if any(is_alarm(e) and parse_iso(e.ts) >= now - window for e in events):
            return None
        return (
            f"the site allows live view only within {live.window_minutes} min after an alarm "
            "(live.policy = after_alarm) and there was none"
        )
    open_: set[str | None] = set()
    closed_at: dt.datetime | None = None
    for e in events:
        if is_alarm(e):
            open_.add(e.partition)
        elif e.kind is Kind.DISARMED and open_:
            ended = {p for p in open_ if p is None or p == e.partition}
            if ended:
                open_ -= ended
                closed_at = parse_iso(e.ts)
    if open_ or (closed_at is not None and closed_at >= now - window):
        return None
    return (
        "the site allows live view only while an incident is open, and "
        f"{live.window_minutes} min after it closed (live.policy = incident): there is none"
    )


def lookback(live: LiveConfig) -> dt.timedelta:
    window = dt.timedelta(minutes=live.window_minutes)
    return window if live.policy == "after_alarm" else INCIDENT_LOOKBACK + window


class LiveAccess:
    """The policy over a journal: ``check()`` → None (allowed) or why not."""

    def __init__(
        self,
        live: LiveConfig,
        recent: Callable[[str], list[Event]],
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.live = live
        self.recent = recent  # journal events since an ISO time, oldest first
        self.now = now or (lambda: dt.datetime.now(dt.timezone.utc))

    def check(self) -> str | None:
        if self.live.policy == "always":
            return None
        now = self.now()
        since = (now - lookback(self.live)).isoformat()
        return refusal(self.live, self.recent(since), now)
