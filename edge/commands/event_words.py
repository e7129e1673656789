"""A journal event as one line of words, for `edge events` and `edge clips`.

The journal keeps details as JSON (``user: null``, lists of ids); a person reads
"by installer", "zones hall, door", "clip 3fa2b1c9 for events #12, #13". Times are in the
site's zone (edge.sitetime); ids are the ones a person can type: the journal sequence number
for an event, the first 8 characters of a clip id (`edge clips show` takes any unique prefix).
Text from outside the box (an operator name, a camera's reason) is printed with its control
characters escaped, so a hostile value cannot drive the terminal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from edge.events import Category, Event
from edge.sitetime import SiteZone, local

SHORT = 8  # characters of an id shown; any unique prefix of 4 or more is accepted
SeqOf = Callable[[str], int | None]

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Keys said first, in this order; the others follow alphabetically.
_FIRST = ("camera", "output", "path", "reason", "mode", "zones", "user", "operator", "source")
_SKIP_TRUE = {"readback_ok"}  # said only when it is False


def line(event: Event, zone: SiteZone, seq_of: SeqOf | None = None) -> str:
    """'#12 2026-12-06 06:04:10 CET BURGLARY ALARM zone hall (Hall) [partition main] BA/130 —
    …': what, where, codes, then the details in words."""
    spec = event.kind.spec
    where = ""
    if event.zone_id:
        named = event.zone_name and event.zone_name != event.zone_id
        where = f" zone {event.zone_id}" + (f" ({event.zone_name})" if named else "")
    if event.partition:
        where += f" [partition {event.partition}]"
    codes = f" {spec.sia}/{spec.cid}" if spec.sia else ""
    label = spec.label.upper() if spec.category in (Category.ALARM, Category.TAMPER) else spec.label
    said = details(event.details, seq_of)
    extra = f" — {said}" if said else ""
    return clean(f"#{event.seq} {local(event.ts, zone)} {label}{where}{codes}{extra}")


def details(data: dict[str, Any], seq_of: SeqOf | None = None) -> str:
    """The details in words, comma-separated; empty values left out."""
    keys = [k for k in _FIRST if k in data] + sorted(k for k in data if k not in _FIRST)
    parts = [_pair(k, data[k], seq_of) for k in keys]
    return ", ".join(p for p in parts if p)


def short(ident: str) -> str:
    return ident[:SHORT]


def event_refs(ids: list[str] | tuple[str, ...], seq_of: SeqOf | None) -> str:
    """'#12, #13' (an id no longer in the journal: its short form)."""
    said = []
    for ident in ids:
        seq = seq_of(str(ident)) if seq_of else None
        said.append(f"#{seq}" if seq else f"{short(str(ident))} (not in the journal)")
    return ", ".join(said) or "none"


def clean(text: str) -> str:
    """Control characters, line separators and bidirectional overrides written as escapes."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


def _pair(key: str, value: Any, seq_of: SeqOf | None) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return ""
    if key in _SKIP_TRUE:
        return "" if value else "PIN DOES NOT FOLLOW THE COMMAND"
    if key in ("user", "operator"):
        return f"by {value}"
    if key == "source":
        return f"via {value}"
    if key == "readback":
        return f"pin reads {'on' if value else 'off'}"
    if key == "ok" and isinstance(value, bool):
        return "succeeded" if value else "failed"
    if key == "events" and isinstance(value, list):
        return f"events {event_refs([str(v) for v in value], seq_of)}"
    if key == "clip_id":
        return f"clip {short(str(value))}"
    if key == "key":
        return f"signed with key {value}"
    return f"{_name(key)} {_value(key, value)}"


def _name(key: str) -> str:
    for suffix in ("_s", "_min", "_bytes"):
        if key.endswith(suffix) and key != suffix:
            key = key[: -len(suffix)]
    return key.replace("_", " ")


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_value("", v) for v in value)
    if isinstance(value, dict):
        inner = ", ".join(f"{_name(str(k))} {_value(str(k), v)}" for k, v in value.items())
        return f"({inner})"
    if key.endswith("_s") and isinstance(value, (int, float)):
        return f"{value:g} s"
    if key.endswith("_min") and isinstance(value, (int, float)):
        return f"{value:g} min"
    if key.endswith("_bytes") and isinstance(value, int):
        return size(value)
    return str(value)


def size(n: int) -> str:
    """Bytes for people: '812 B', '48 KiB', '3.2 MiB', '1.5 GiB'."""
    if n < 1024:
        return f"{n} B"
    if n < 1_048_576:
        return f"{n / 1024:.0f} KiB"
    if n < 1_073_741_824:
        return f"{n / 1_048_576:.1f} MiB"
    return f"{n / 1_073_741_824:.1f} GiB"
