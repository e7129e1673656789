"""`edge clips [list|show|export]`: find, inspect and hand over the alarm clips of this box.

It opens the clip index read-only, so it runs beside edge-video at any time. `export` copies a
clip, its snapshot and a JSON sidecar (metadata and SHA-256 of each file) to a folder, e.g. a
USB stick for the police, and checks that the copies match what was recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from edge.video.clip_index import ClipIndex, ClipRecord


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
        "--since", metavar="WHEN", help="only clips since WHEN: an ISO time (UTC) or 10m, 2h, 3d"
    )
    ls.add_argument("--limit", type=positive_int, default=200, metavar="N", help="newest N clips")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", parents=parents, help="details of a clip")
    show.add_argument("ref", metavar="ID", help="clip id, or an event id (shows its clips)")
    show.add_argument("--json", action="store_true", help="print JSON")
    export = actions.add_parser(
        "export", parents=parents, help="copy a clip, its snapshot and a JSON sidecar to DEST"
    )
    export.add_argument("ref", metavar="ID", help="clip id, or an event id (exports its clips)")
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
    try:
        with _open(path) as index:
            if args.action == "list":
                return _list(index, args)
            if args.action == "show":
                return _show(index, args.ref, args.json)
            return _export(index, args.ref, args.dest, cfg.site.id)
    except CommandError as exc:
        print(f"edge clips {args.action}: {exc}", file=sys.stderr)
        return EX_USAGE
    except ClipIndexError as exc:
        print(f"edge clips {args.action}: {exc}", file=sys.stderr)
        return EX_NOINPUT


def _open(path: Path) -> ClipIndex:
    from edge.video.clip_index import ClipIndex

    return ClipIndex(path, readonly=True)


def _list(index: ClipIndex, args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    records = index.query(camera=args.camera, since_ts=since, limit=args.limit)
    for record in records:
        print(json.dumps(record.to_dict()) if args.json else _line(record))
    if not records and not args.json:
        print("no clips match", file=sys.stderr)
    return EX_OK


def _line(r: ClipRecord) -> str:
    state = "delivered" if r.delivered else "not yet delivered"
    events = ", ".join(r.event_ids) or "none"
    return (
        f"{r.id}  camera {r.camera}  {r.start_ts} .. {r.end_ts}  {r.duration_s:.1f} s  "
        f"{_size(r.disk_bytes)}  {state}  events: {events}"
    )


def _size(n: int) -> str:
    return f"{n / 1_048_576:.1f} MiB" if n >= 1_048_576 else f"{n / 1024:.0f} KiB"


def _find(index: ClipIndex, ref: str) -> list[ClipRecord]:
    records = index.find(ref)
    if not records:
        raise LookupError(
            f"no clip with id or event id {ref!r}: see `edge clips list` (clips older than the "
            "retention period are deleted)"
        )
    return records


def _show(index: ClipIndex, ref: str, as_json: bool) -> int:
    try:
        records = _find(index, ref)
    except LookupError as exc:
        print(f"edge clips show: {exc}", file=sys.stderr)
        return EX_NOINPUT
    for r in records:
        if as_json:
            print(json.dumps(r.to_dict()))
            continue
        present = "present" if r.path.exists() else "MISSING"
        print(f"clip {r.id}")
        print(f"  camera:    {r.camera}")
        print(f"  events:    {', '.join(r.event_ids) or 'none'}")
        print(f"  recorded:  {r.start_ts} .. {r.end_ts} (UTC, {r.duration_s:.1f} s)")
        print(f"  video:     {r.path} ({_size(r.bytes)}, {present})")
        print(f"  snapshot:  {r.snapshot or 'none'}")
        print(f"  sha256:    {r.sha256}")
        print(f"  delivered: {'yes' if r.delivered else 'not yet'} to the central station")
    return EX_OK


def _export(index: ClipIndex, ref: str, dest: Path, site_id: str) -> int:
    try:
        records = _find(index, ref)
        missing = [r for r in records if not r.path.exists()]
        if missing:
            raise LookupError(
                f"the video file of clip {missing[0].id} is missing: {missing[0].path} "
                "(removed by hand, or the data disk is not mounted)"
            )
    except LookupError as exc:
        print(f"edge clips export: {exc}", file=sys.stderr)
        return EX_NOINPUT
    status = EX_OK
    for record in records:
        try:
            ok = _export_one(record, dest, site_id)
        except OSError as exc:
            print(f"edge clips export: cannot write to {dest}: {exc}", file=sys.stderr)
            return EX_CANTCREAT
        if not ok:
            status = EX_DATAERR
    return status


def _export_one(r: ClipRecord, dest: Path, site_id: str) -> bool:
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
    print(f"exported clip {r.id} ({r.camera}, {r.start_ts}) to {dest}")
    if not intact:
        print(
            f"WARNING: clip {r.id} does not match the SHA-256 recorded when it was saved: the "
            "file was modified or damaged on this box (exported anyway, marked intact=false)",
            file=sys.stderr,
        )
    return intact
