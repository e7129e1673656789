"""`edge events [list|verify]`: read the event journal ("main courante") from any shell.

It opens the journal read-only, so it can run beside the alarm service at any time and can never
change or lock what the service writes. Times are stored in UTC; they are printed in the site's
time zone with the zone's abbreviation (``[site] timezone``), and a ``--since`` time typed
without an offset is read in that zone too, so what a person reads they can type back. JSON
output keeps the stored UTC times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.commands.event_words import line
from edge.errors import (
    EX_CONFIG,
    EX_OK,
    EX_UNAVAILABLE,
    EX_USAGE,
    CommandError,
    ConfigError,
    JournalError,
)
from edge.events import Event
from edge.journal import Journal, JournalNotReady, iso_utc, journal_path
from edge.sitetime import SiteZone, naive_as_site, site_zone

EX_TAMPERED = 1  # `verify` found a broken chain, or there is nothing to verify
POLL_S = 0.2
BATCH = 1000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d{1,7})\s*([smhdw])\s*$", re.IGNORECASE)
_SINCE_HELP = (
    "2026-11-22T10:00 (the site's time zone unless an offset is given) or a duration such as "
    "10m, 2h, 3d"
)
SEQ_CACHE = 4096  # event id -> seq lookups remembered while printing


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "events",
        parents=parents,
        help="list, follow or verify the event journal",
        description="List the journal in words (default), or verify its hash chain.",
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=["list", "verify"],
        default="list",
        help="list (default) or verify: check that no event was edited, removed or reordered",
    )
    parser.add_argument("--since", metavar="WHEN", help=f"only events since WHEN: {_SINCE_HELP}")
    parser.add_argument("--zone", metavar="ZONE", help="only events of this zone id")
    parser.add_argument(
        "--limit", type=positive_int, default=200, metavar="N", help="newest N events (default 200)"
    )
    parser.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


def positive_int(text: str) -> int:
    """argparse type for counts such as --limit: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 (got {text!r}), e.g. 50")
    return value


def parse_since(text: str, now: dt.datetime | None = None, zone: SiteZone | None = None) -> str:
    """``--since`` as the journal's UTC timestamp; a time without an offset is in ``zone``
    (the site's), UTC when none is given. CommandError says what is accepted."""
    match = _DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
        return iso_utc((now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(seconds=seconds))
    try:
        return iso_utc(naive_as_site(text, zone or site_zone(None)))
    except (ValueError, OverflowError) as exc:
        raise CommandError(f"--since {text!r} is not a time: give {_SINCE_HELP}") from exc


def run(args: argparse.Namespace) -> int:
    from edge.config import load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    path = journal_path(cfg)
    if args.action == "verify":
        return _verify(path)
    zone = site_zone(cfg)
    try:
        since = parse_since(args.since, zone=zone) if args.since else None
    except CommandError as exc:
        print(f"edge events: {exc}", file=sys.stderr)
        return EX_USAGE
    args.site_zone = zone
    args.zone_ids = [z.id for z in cfg.zones]
    try:
        return _list(path, args, since)
    except KeyboardInterrupt:
        return EX_OK
    except BrokenPipeError:  # `edge events | head`: the reader left, which is fine
        _silence_stdout()
        return EX_OK


def _missing(path: Path) -> str:
    return f"no journal yet at {path} (the alarm service creates it on first start)"


def _verify(path: Path) -> int:
    if not path.exists():
        print(_missing(path), file=sys.stderr)
        return EX_TAMPERED
    try:
        with Journal(path, readonly=True) as journal:
            report = journal.verify()
    except JournalError as exc:
        print(f"edge events verify: {exc}", file=sys.stderr)
        return EX_TAMPERED
    if report.ok:
        print(f"OK: {report.checked} events, chain intact")
        return EX_OK
    print(
        f"TAMPERED: first bad event is seq {report.first_bad_seq} "
        f"({report.checked} events before it are intact): {report.reason}"
    )
    return EX_TAMPERED


def _list(path: Path, args: argparse.Namespace, since: str | None) -> int:
    if not args.follow and not path.exists():
        if args.zone is not None and args.zone not in args.zone_ids:
            print(f"edge events: {_no_such_zone(args.zone, args.zone_ids)}", file=sys.stderr)
            return EX_USAGE
        print(_missing(path), file=sys.stderr)
        return EX_OK
    try:
        journal = _wait_for(path) if args.follow else Journal(path, readonly=True)
    except JournalError as exc:
        print(f"edge events: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    with journal:
        problem = _unknown_zone(journal, args.zone, args.zone_ids)
        if problem:
            print(f"edge events: {problem}", file=sys.stderr)
            return EX_USAGE
        emit = _printer(journal, args.site_zone, args.json)
        start = journal.last_seq()
        shown = journal.query(since_ts=since, zone=args.zone, limit=args.limit)
        for event in shown:
            emit(event)
        sys.stdout.flush()
        if args.follow:
            _follow(journal, max([start, *(e.seq for e in shown)]), args.zone, emit)
    return EX_OK


def _unknown_zone(journal: Journal, zone: str | None, configured: list[str]) -> str | None:
    """Why ``--zone`` names no zone: neither in the site file nor in the journal (a zone
    removed from the site keeps its history, so the journal counts too)."""
    if zone is None or zone in configured or journal.query(zone=zone, limit=1):
        return None
    return _no_such_zone(zone, configured)


def _no_such_zone(zone: str, configured: list[str]) -> str:
    return (
        f"no zone {zone!r} in this site or its journal; zones: "
        f"{', '.join(configured) or '(none configured)'} — give a zone id as the site file "
        "names it"
    )


def _printer(journal: Journal, zone: SiteZone, as_json: bool) -> Callable[[Event], None]:
    """Print one event: JSON as stored, or a line in words with its events' numbers."""
    if as_json:
        return lambda event: print(json.dumps(event.to_dict(), ensure_ascii=False))
    seqs: dict[str, int | None] = {}

    def seq_of(event_id: str) -> int | None:
        if event_id not in seqs:
            if len(seqs) >= SEQ_CACHE:
                seqs.pop(next(iter(seqs)))
            try:
                found = journal.get(event_id)
            except JournalError:
                found = None
            seqs[event_id] = found.seq if found else None
        return seqs[event_id]

    return lambda event: print(line(event, zone, seq_of))


def _wait_for(path: Path) -> Journal:
    """Open the journal read-only, waiting (and saying so once) until the service creates it."""
    said = False
    while True:
        try:
            return Journal(path, readonly=True)
        except JournalNotReady:
            if not said:
                print(f"waiting: {_missing(path)}", file=sys.stderr, flush=True)
                said = True
        time.sleep(POLL_S)


def _follow(journal: Journal, last: int, zone: str | None, emit: Callable[[Event], None]) -> None:
    """Poll for rows after ``last`` until interrupted; polling keeps the reader lock-free."""
    while True:
        try:
            batch = journal.since(last, limit=BATCH)
        except JournalError as exc:  # the writer restarting or checkpointing: try again
            print(f"journal busy ({exc}); retrying", file=sys.stderr, flush=True)
            time.sleep(POLL_S)
            continue
        for event in batch:
            last = event.seq
            if zone is None or event.zone_id == zone:
                emit(event)
        sys.stdout.flush()
        if len(batch) < BATCH:
            time.sleep(POLL_S)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (tests, embedding)
        pass
