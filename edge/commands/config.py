"""`edge config check FILE`: validate a site configuration before it reaches a box."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edge.errors import EX_CONFIG, ConfigError


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("config", help="check a site configuration", parents=parents)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help="validate FILE and print OK or every problem with its key and fix",
        parents=parents,
    )
    check.add_argument("file", nargs="?", help="configuration file (default: --config)")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from edge.config import load_config

    path = args.file or args.config
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    zones, outputs = len(cfg.zones), len(cfg.outputs)
    print(
        f"OK: {path or 'configuration'}: site {cfg.site.id}, {len(cfg.partitions)} partition(s), "
        f"{zones} zone(s), {outputs} output(s), hardware {cfg.hardware.backend}"
    )
    return 0
