"""Times as a person on site reads them: in the site's time zone, with the zone named.

Everything is stored and sent in UTC (the journal, the clip index, the protocol); only what
is printed for people is converted, here, so every command shows the same clock. The zone's
abbreviation (CET, CEST) is printed with each time: it tells summer from winter time, and
says plainly that the time is not UTC. A zone name the tz database does not know falls back
to UTC and says so, rather than printing a wrong local time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import SiteConfig

UTC = dt.timezone.utc


@dataclasses.dataclass(frozen=True)
class SiteZone:
    tz: dt.tzinfo
    name: str  # "Europe/Paris", or "UTC"
    problem: str = ""  # why the configured zone is not used, if it is not

    def describe(self) -> str:
        """'times in Europe/Paris' (with the fallback's reason when there is one)."""
        return f"times in {self.name}" + (f" ({self.problem})" if self.problem else "")


def site_zone(cfg: SiteConfig | None) -> SiteZone:
    """The zone of ``[site] timezone``; UTC (and why) when the tz database lacks it."""
    name = cfg.site.timezone if cfg is not None else "UTC"
    if name in ("UTC", "Etc/UTC", ""):
        return SiteZone(UTC, "UTC")
    try:
        from zoneinfo import ZoneInfo

        return SiteZone(ZoneInfo(name), name)
    except (ValueError, OSError, ImportError) as exc:  # ZoneInfoNotFoundError is a KeyError
        return SiteZone(UTC, "UTC", f"site.timezone {name!r} unknown here: {exc}")
    except KeyError:
        return SiteZone(
            UTC, "UTC", f"site.timezone {name!r} is not in the tz database (apt install tzdata)"
        )


def parse(value: str | float | dt.datetime | None) -> dt.datetime | None:
    """An ISO 8601 text (a trailing Z, or no offset, is UTC), epoch seconds, or a datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, (int, float)):
        when = dt.datetime.fromtimestamp(float(value), UTC)
    else:
        try:
            when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def local(value: str | float | dt.datetime | None, zone: SiteZone, *, seconds: bool = True) -> str:
    """'2026-12-06 05:40:22 CET'; '?' when there is no time, the text itself when unreadable."""
    when = parse(value)
    if when is None:
        return "?" if value in (None, "") else str(value)
    here = when.astimezone(zone.tz)
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return f"{here.strftime(fmt)} {here.tzname() or zone.name}"


def naive_as_site(text: str, zone: SiteZone) -> dt.datetime:
    """A time typed by a person: with an offset as given, without one in the site's zone."""
    when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=zone.tz)
