"""`edge diag [--json] [--check NAME]`: what is wrong with this box, worst first, and what to do.

Exit status: 0 all ok (or unknown), 1 a warning, 2 a failure — so scripts and the central
station's tools can act on it. It works with services down and the broker unreachable (that
is then the first line), and takes at most about a second.

`edge diag bundle [--output PATH]` writes the support archive (edge/diag/bundle.py): this
report, the last journal events, the services' logs, the configuration without its secrets
and the versions; it prints the archive's path and size (exit 0, or 73 when it cannot be
written).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge.errors import EX_CANTCREAT, EX_USAGE
from edge.sitetime import site_zone

STATE_FILE = "diag-state.json"
WIDTH = 100


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "diag",
        parents=parents,
        help="level-1 diagnostics: what is wrong, how bad, what to do",
        description="Runs every check (or those named) and prints the findings, worst first. "
        "Exit 0: all ok; 1: a warning; 2: a failure.",
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=["bundle"],
        help="bundle: write a support archive (report, journal, logs, config without secrets, "
        "versions) and print its path and size",
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        type=Path,
        help="bundle: the archive's file name, or a folder for it (default: the current folder)",
    )
    parser.add_argument("--json", action="store_true", help="the full report as JSON")
    parser.add_argument(
        "--check", action="append", metavar="NAME", help="run only this check (repeatable)"
    )
    parser.add_argument("--all", action="store_true", help="also list the checks that are ok")
    parser.add_argument(
        "--as", dest="identity", metavar="NAME", help="box-bus user to read the services as"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.diag import report, retained
    from edge.diag.registry import CHECKS, _load_families

    started = time.monotonic()
    cfg = load_config(args.config)  # a ConfigError is reported by edge.cli (exit 78)
    _load_families()
    names = args.check
    unknown_names = [n for n in names or [] if n not in CHECKS]
    if unknown_names:
        print(
            f"error: no check {', '.join(map(repr, unknown_names))}; checks: "
            f"{', '.join(sorted(CHECKS))}",
            file=sys.stderr,
        )
        return EX_USAGE
    if args.output is not None and args.action != "bundle":
        print("error: --output goes with `edge diag bundle`", file=sys.stderr)
        return EX_USAGE
    src = _sources(cfg, args.identity)
    rep = retained.use(cfg, src, names)  # edge-alarm's own run, while fresh
    if rep is None:
        rep = report.build(cfg, src, names, Path(cfg.paths.run_dir) / STATE_FILE)
    rep["took_s"] = round(time.monotonic() - started, 3)
    if args.action == "bundle":
        return _bundle(cfg, rep, args)
    if args.json:
        print(json.dumps(rep, indent=2, sort_keys=True))
    else:
        print(
            report.as_text(rep, show_ok=args.all or bool(names), width=WIDTH, zone=site_zone(cfg))
        )
    return int(report.exit_code(rep))


def _bundle(cfg: Any, rep: dict[str, Any], args: argparse.Namespace) -> int:
    from edge.commands.event_words import size
    from edge.diag.bundle import BundleError, write

    try:
        made = write(cfg, rep, args.output, config_path=args.config or "")
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    print(f"{made.path} ({size(made.size)})")
    for note in made.notes:
        print(f"  note: {note}", file=sys.stderr)
    return 0


def _sources(cfg: Any, name: str | None) -> Any:
    from edge.commands.panel import default_identity
    from edge.commands.remote import NotAdmitted, identity_of
    from edge.diag.sources import Sources, from_bus

    try:
        me = identity_of(cfg, name or default_identity(cfg.bus.identities_dir), required=False)
    except NotAdmitted as exc:
        src = Sources(cfg)
        src.bus_error = f"no box-bus identity to read the services with ({exc})"
        src.extra["bus_denied"] = True
        return src
    return from_bus(cfg, me)
