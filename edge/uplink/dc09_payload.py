"""Our events as DC-09 messages: SIA-DCS or ADM-CID data blocks, NULL polls, [V…] links.

Every transmittable :class:`~edge.events.Kind` already carries its SIA code and its Contact
ID code and qualifier, so this module only adds what a receiver needs besides the code:
the account, the area (partition) and the zone as numbers.

- SIA-DCS: ``#ACCT|Nri<area>/<code><zone:03d>``, e.g. ``#1234|Nri1/BA001``.
- ADM-CID: ``#ACCT|<q><eee> <gg> <zzz>``, e.g. ``#1234|1130 01 001`` (q = 1 new, 3 restore).
- NULL: empty data block; the receiver answers, which proves the path.

Events without a zone (mains, battery, service started) use zone 0; events without a
partition take their zone's partition, else area 0 (the whole system).

Extended data (DC-09 ``[X…]`` blocks after the data block) carries what the code cannot:

- ``[V<url>]``: the verification link of an alarm that has a video clip;
- ``[H<hh:mm:ss,MM-DD-YYYY>]``: when the event happened (UTC). The frame's own timestamp is
  the sending time, which the receiver checks against its clock; after an outage an event
  goes out long after it happened, and only this block tells the operator when.

Receivers that read Contact ID with a single extended block after the data (pysiaalarm,
hence Home Assistant) refuse a message with two, so an ADM-CID message carries at most one:
the verification link when there is one, else the time of the event.
"""

from __future__ import annotations

import dataclasses
import logging
import string
from typing import TYPE_CHECKING
from urllib.parse import quote

from edge.config.dc09 import Dc09Config, numbering
from edge.errors import EdgeError
from edge.events import Event
from edge.journal_schema import parse_iso
from edge.uplink.dc09_frame import format_timestamp

if TYPE_CHECKING:
    from edge.config.site import SiteConfig
    from edge.uplink.dc09_frame import MessageId

log = logging.getLogger(__name__)

VERIFY_MAX = 200  # keeps an encrypted frame well inside one 1 KiB receiver read
# Characters a [V…] block may hold: printable ASCII except the block and field separators.
_URL_SAFE = "".join(c for c in string.printable if c not in "[]|" + string.whitespace)


class NotTransmittable(EdgeError, ValueError):
    """The event kind has no code for the configured DC-09 protocol (local-only kinds)."""


@dataclasses.dataclass(frozen=True)
class Message:
    """One DC-09 message before framing: ``data`` is inside the brackets, ``extended``
    the ``[X…]`` blocks that follow them, ``occurred`` when the event happened (epoch s,
    None for no ``[H…]`` block)."""

    id: MessageId
    data: str
    extended: str = ""
    occurred: float | None = None

    def tail(self, timestamp: str, offset_s: float = 0.0) -> str:
        """Everything after the opening bracket through the timestamp (what AES covers).

        ``offset_s`` (the receiver's clock minus ours) shifts the event time as it shifts
        the timestamp, so the receiver sees how long ago the event happened by its clock.
        """
        when = "" if self.occurred is None else event_time_block(self.occurred + offset_s)
        return f"{self.data}]{self.extended}{when}{timestamp}"


NULL_MESSAGE = Message("NULL", "")


class Numbering:
    """Zone and area numbers of one site, computed once."""

    def __init__(self, cfg: Dc09Config, site: SiteConfig) -> None:
        self.zones = numbering([z.id for z in site.zones], cfg.zones)
        self.areas = numbering([p.id for p in site.partitions], cfg.partitions)
        self._zone_partition = {z.id: z.partition for z in site.zones}

    def zone(self, zone_id: str | None) -> int:
        if zone_id is None:
            return 0
        number = self.zones.get(zone_id)
        if number is None:
            log.warning("zone %s is not in the site configuration: sent as zone 0", zone_id)
            return 0
        return number

    def area(self, event: Event) -> int:
        partition = event.partition or self._zone_partition.get(event.zone_id or "")
        if partition is None:
            return 0
        number = self.areas.get(partition)
        if number is None:
            log.warning("partition %s is not in the site configuration: area 0", partition)
            return 0
        return number


def sia_dcs_data(account: str, area: int, code: str, zone: int) -> str:
    return f"#{account}|Nri{area}/{code}{zone:03d}"


def adm_cid_data(account: str, qualifier: int, cid: int, group: int, zone: int) -> str:
    return f"#{account}|{qualifier}{cid:03d} {group:02d} {zone:03d}"


def event_time_block(epoch: float) -> str:
    """``[Hhh:mm:ss,MM-DD-YYYY]``: the DC-09 extended data field for the time of the event."""
    return f"[H{format_timestamp(epoch)[1:]}]"


def occurred(event: Event) -> float | None:
    """When the event happened, from its journal timestamp (None if that is unreadable)."""
    try:
        return parse_iso(event.ts).timestamp()
    except (ValueError, IndexError):
        log.warning("event %s has an unreadable ts %r: sent without its time", event.id, event.ts)
        return None


def verification_block(url: str) -> str:
    """``[V<url>]``, the link an operator opens to verify the alarm; "" if it cannot fit."""
    quoted = quote(url, safe=_URL_SAFE)
    if len(quoted) > VERIFY_MAX:
        log.warning("verification link of %d characters left out (max %d)", len(quoted), VERIFY_MAX)
        return ""
    return f"[V{quoted}]"


def event_message(event: Event, cfg: Dc09Config, numbers: Numbering) -> Message:
    """The DC-09 message of an event; NotTransmittable if its kind has no code."""
    spec = event.kind.spec
    zone, area = numbers.zone(event.zone_id), numbers.area(event)
    if cfg.protocol == "ADM-CID":
        if spec.cid is None:
            raise NotTransmittable(f"{event.kind.value} has no Contact ID code: not sent")
        data = adm_cid_data(cfg.account, spec.qualifier, spec.cid, area, zone)
    else:
        if spec.sia is None:
            raise NotTransmittable(f"{event.kind.value} has no SIA code: not sent")
        data = sia_dcs_data(cfg.account, area, spec.sia, zone)
    url = event.details.get("clip_url")
    extended = verification_block(url) if cfg.verification_links and isinstance(url, str) else ""
    when = None if cfg.protocol == "ADM-CID" and extended else occurred(event)
    return Message(cfg.protocol, data, extended, when)
