"""`edge clips [list|show|export]`: find, inspect and hand over the alarm clips of this box.

It opens the clip index read-only, so it runs beside edge-video at any time. `export` copies a
clip, its snapshot and a JSON sidecar (metadata and SHA-256 of each file) to a folder, e.g. a
USB stick for the police, and checks that the copies match what was recorded.

Clips and events share the ids a person reads and types: a clip is shown with the journal
numbers of its events (#12, as `edge events` prints them), and `show` / `export` take a clip
id, an event id, an event's number (12), or any unique prefix of 4 or more characters of an
id; an ambiguous prefix is refused with the candidates. Times are printed in the site's time
zone, with the zone named; JSON output keeps the stored UTC.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.commands.event_words import SeqOf, clean, event_refs, short, size
from edge.commands.events import parse_since, positive_int
from edge.errors import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    EX_USAGE,
    CommandError,
    ConfigError,
)
from edge.sitetime import SiteZone, local, site_zone

if TYPE_CHECKING:
    from edge.config import SiteConfig
    from edge.journal import Journal
    from edge.video.clip_index import ClipIndex, ClipRecord

MIN_PREFIX = 4
MAX_SCAN = 100_000  # clips looked at to match a prefix (the quota keeps far fewer)
SHOW_CANDIDATES = 10
_HEX = frozenset("0123456789abcdef")


class Ambiguous(CommandError):
    """A prefix names more than one clip or event: the message lists them."""


_REF_HELP = (
    "a clip id, an event id or an event's number as `edge events` shows it (12): the event's "
    "clips; any unique prefix of 4 or more characters of an id will do"
)


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "clips",
        parents=parents,
        help="list, show or export the alarm video clips",
        description="Alarm clips kept on this box (oldest first), their details, and export.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    ls = actions.add_parser("list", parents=parents, help="clips, oldest first")
    ls.add_argument("--camera", metavar="CAMERA", help="only clips of this camera id")
    ls.add_argument(
        "--since",
        metavar="WHEN",
        help="only clips since WHEN: a time (the site's zone unless an offset is given) or "
        "10m, 2h, 3d",
    )
    ls.add_argument("--limit", type=positive_int, default=200, metavar="N", help="newest N clips")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", parents=parents, help="details of a clip")
    show.add_argument("ref", metavar="ID", help=_REF_HELP)
    show.add_argument("--json", action="store_true", help="print JSON")
    export = actions.add_parser(
        "export", parents=parents, help="copy a clip, its snapshot and a JSON sidecar to DEST"
    )
    export.add_argument("ref", metavar="ID", help=_REF_HELP)
    export.add_argument("dest", metavar="DEST", type=Path, help="folder (created if missing)")
    for p in (ls, show, export):
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.video.clip_index import ClipIndexError, index_path

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    path = index_path(cfg)
    if not path.exists():
        print(
            f"no clips yet: {path} does not exist (edge-video creates it with the first clip)",
            file=sys.stderr,
        )
        return EX_OK if args.action == "list" else EX_NOINPUT
    zone = site_zone(cfg)
    try:
        with _open(path) as index, _Events(cfg) as events:
            if args.action == "list":
                return _list(index, args, zone, events.seq_of)
            records = _resolve(index, args.ref, events)
            if args.action == "show":
                return _show(records, args.json, zone, events.seq_of)
            return _export(records, args.dest, cfg.site.id, zone)
    except LookupError as exc:
        print(f"edge clips {args.action}: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except CommandError as exc:
        print(f"edge clips {args.action}: {exc}", file=sys.stderr)
        return EX_USAGE
    except ClipIndexError as exc:
        print(f"edge clips {args.action}: {exc}", file=sys.stderr)
        return EX_NOINPUT


def _open(path: Path) -> ClipIndex:
    from edge.video.clip_index import ClipIndex

    return ClipIndex(path, readonly=True)


class _Events:
    """The journal, read-only, to say a clip's events by number and find an event's clips;
    a journal that cannot be opened only costs the numbers (ids are shown instead)."""

    def __init__(self, cfg: SiteConfig) -> None:
        from edge.journal import journal_path

        self.path = journal_path(cfg)
        self.journal: Journal | None = None
        self.problem = ""

    def __enter__(self) -> _Events:
        from edge.errors import JournalError
        from edge.journal import Journal

        try:
            self.journal = Journal(self.path, readonly=True)
        except JournalError as exc:
            self.problem = str(exc)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.journal is not None:
            self.journal.close()

    def seq_of(self, event_id: str) -> int | None:
        from edge.errors import JournalError

        try:
            found = self.journal.get(event_id) if self.journal else None
        except JournalError:
            return None
        return found.seq if found else None

    def id_of(self, seq: int) -> str:
        """The id of event number ``seq``; LookupError saying why when there is none."""
        if self.journal is None:
            raise LookupError(f"event #{seq}: the journal cannot be read ({self.problem})")
        found = self.journal.by_seqs([seq])
        if not found:
            raise LookupError(
                f"no event #{seq} in the journal (`edge events` lists them; old events are pruned)"
            )
        return found[0].id


def _list(index: ClipIndex, args: argparse.Namespace, zone: SiteZone, seq_of: SeqOf) -> int:
    since = parse_since(args.since, zone=zone) if args.since else None
    records = index.query(camera=args.camera, since_ts=since, limit=args.limit)
    for record in records:
        print(json.dumps(record.to_dict()) if args.json else _line(record, zone, seq_of))
    if not records and not args.json:
        print("no clips match", file=sys.stderr)
    return EX_OK


def _line(r: ClipRecord, zone: SiteZone, seq_of: SeqOf) -> str:
    state = "delivered" if r.delivered else "not yet delivered"
    start, end = local(r.start_ts, zone), local(r.end_ts, zone)
    end = end[11:] if end[:10] == start[:10] else end  # the same day: the time only
    return clean(
        f"{short(r.id)}  camera {r.camera}  {start} .. {end}  {r.duration_s:.1f} s  "
        f"{size(r.disk_bytes)}  {state}  events: {event_refs(r.event_ids, seq_of)}"
    )


def _resolve(index: ClipIndex, ref: str, events: _Events) -> list[ClipRecord]:
    """The clips ``ref`` names (see the module docstring); LookupError when none, Ambiguous
    when a prefix fits more than one clip or event."""
    ref = ref.strip()
    if ref.startswith("#") and ref[1:].isdigit():
        return _of_event(index, events.id_of(int(ref[1:])), f"event {ref}")
    exact = index.find(ref)
    if exact:
        return exact
    found: dict[str, tuple[str, list[ClipRecord]]] = {}  # key -> (words, clips)
    if ref.isdigit() and len(ref) <= 12:
        try:
            event_id = events.id_of(int(ref))
        except LookupError:
            pass
        else:
            found[f"event:{event_id}"] = (f"event #{ref}", index.for_event(event_id))
    low = ref.lower()
    if len(low) >= MIN_PREFIX and set(low) <= _HEX:
        found.update(_by_prefix(index, low, events))
    elif not found and set(low) <= _HEX and low:
        raise CommandError(
            f"{ref!r} is too short: give at least {MIN_PREFIX} characters of a clip or event "
            "id, or an event's number"
        )
    if len(found) > 1:
        listed = "; ".join(words for words, _ in list(found.values())[:SHOW_CANDIDATES])
        more = len(found) - SHOW_CANDIDATES
        raise Ambiguous(
            f"{ref!r} fits {len(found)} clips or events: {listed}"
            + (f" and {more} more" if more > 0 else "")
            + " — give more characters"
        )
    if found:
        words, records = next(iter(found.values()))
        if not records:
            raise LookupError(f"{words} has no clip (no camera films its zone, or it was deleted)")
        return records
    raise LookupError(
        f"no clip with id or event id {ref!r}: see `edge clips list` (clips older than the "
        "retention period are deleted)"
    )


def _of_event(index: ClipIndex, event_id: str, words: str) -> list[ClipRecord]:
    records = index.for_event(event_id)
    if not records:
        raise LookupError(f"{words} has no clip (no camera films its zone, or it was deleted)")
    return records


def _by_prefix(
    index: ClipIndex, prefix: str, events: _Events
) -> dict[str, tuple[str, list[ClipRecord]]]:
    """Clips whose id, and events (of clips) whose id, start with ``prefix``."""
    found: dict[str, tuple[str, list[ClipRecord]]] = {}
    for record in index.query(limit=MAX_SCAN):
        if record.id.startswith(prefix):
            found[f"clip:{record.id}"] = (f"clip {record.id} ({record.camera})", [record])
        for event_id in record.event_ids:
            if event_id.startswith(prefix):
                key = f"event:{event_id}"
                words, clips = found.get(key, ("", []))
                seq = events.seq_of(event_id)
                words = f"event {f'#{seq} ' if seq else ''}{event_id}"
                found[key] = (words, [*clips, record])
    return found


def _show(records: list[ClipRecord], as_json: bool, zone: SiteZone, seq_of: SeqOf) -> int:
    for r in records:
        if as_json:
            print(json.dumps(r.to_dict()))
            continue
        present = "present" if r.path.exists() else "MISSING"
        lines = [
            f"clip {r.id}",
            f"  camera:    {r.camera}",
            f"  events:    {event_refs(r.event_ids, seq_of)}",
            f"  recorded:  {local(r.start_ts, zone)} .. {local(r.end_ts, zone)} "
            f"({r.duration_s:.1f} s; {zone.describe()})",
            f"  video:     {r.path} ({size(r.bytes)}, {present})",
            f"  snapshot:  {r.snapshot or 'none'}",
            f"  sha256:    {r.sha256}",
            f"  delivered: {'yes' if r.delivered else 'not yet'} to the central station",
        ]
        print("\n".join(clean(text) for text in lines))
    return EX_OK


def _export(records: list[ClipRecord], dest: Path, site_id: str, zone: SiteZone) -> int:
    missing = [r for r in records if not r.path.exists()]
    if missing:
        print(
            f"edge clips export: the video file of clip {missing[0].id} is missing: "
            f"{missing[0].path} (removed by hand, or the data disk is not mounted)",
            file=sys.stderr,
        )
        return EX_NOINPUT
    status = EX_OK
    for record in records:
        try:
            ok = _export_one(record, dest, site_id, zone)
        except OSError as exc:
            print(f"edge clips export: cannot write to {dest}: {exc}", file=sys.stderr)
            return EX_CANTCREAT
        if not ok:
            status = EX_DATAERR
    return status


def _export_one(r: ClipRecord, dest: Path, site_id: str, zone: SiteZone) -> bool:
    """Copy the files, hash the copies; False (and a warning) when they differ from the record."""
    from edge.video.clips import sha256_file

    dest.mkdir(parents=True, exist_ok=True)
    video = dest / f"{r.id}.mp4"
    shutil.copyfile(r.path, video)
    files: dict[str, Any] = {"video": {"name": video.name, "sha256": sha256_file(video)}}
    if r.snapshot and r.snapshot.exists():
        snap = dest / f"{r.id}.jpg"
        shutil.copyfile(r.snapshot, snap)
        files["snapshot"] = {"name": snap.name, "sha256": sha256_file(snap)}
    intact = files["video"]["sha256"] == r.sha256
    sidecar = {
        "v": 1,
        "site": site_id,
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "intact": intact,
        "clip": r.to_dict() | {"path": r.path.name, "snapshot": r.snapshot and r.snapshot.name},
        "files": files,
    }
    (dest / f"{r.id}.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    print(f"exported clip {r.id} ({r.camera}, {local(r.start_ts, zone)}) to {dest}")
    if not intact:
        print(
            f"WARNING: clip {r.id} does not match the SHA-256 recorded when it was saved: the "
            "file was modified or damaged on this box (exported anyway, marked intact=false)",
            file=sys.stderr,
        )
    return intact
