"""`edge sim trip|restore|set ZONE`: drive a simulated site's loops from another terminal.

The simulated hardware lives inside edge-alarm (hardware.backend = "sim"); this command
only publishes on the box bus and prints what the simulator did. Exit status: 0 done, 64 a
wrong zone or value, 69 the broker or edge-alarm does not answer (edge/commands/remote.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edge.errors import EX_USAGE, CommandError


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("sim", help="drive simulated alarm loops", parents=parents)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for name, text in (
        ("trip", "put ZONE in its alarm condition"),
        ("restore", "put ZONE back to normal"),
    ):
        p = actions.add_parser(name, help=text, parents=parents)
        p.add_argument("zone")
        p.set_defaults(func=run, value=name)
    p = actions.add_parser(
        "set", help="set ZONE's loop to OHMS, 'open' or 'short'", parents=parents
    )
    p.add_argument("zone")
    p.add_argument("value", help="resistance in ohms (e.g. 9400), open or short")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge.commands.remote import (
        NotAdmitted,
        Unavailable,
        ask,
        exit_status,
        identity_of,
        require_broker,
    )
    from edge.config import load_config

    cfg = load_config(args.config)  # a ConfigError is reported by edge.cli (exit 78)
    ids = [z.id for z in cfg.zones]
    if args.zone not in ids:
        print(
            f"error: no zone {args.zone!r} in {args.config or 'the configuration'}; "
            f"zones: {', '.join(ids) or '(none)'}",
            file=sys.stderr,
        )
        return EX_USAGE
    if cfg.hardware.backend != "sim":
        print(
            'error: this site uses real hardware; `edge sim` needs hardware.backend = "sim"',
            file=sys.stderr,
        )
        return EX_USAGE
    try:
        require_broker(cfg, args.config)  # before the MQTT client is loaded: fails fast
        from edge.bus import Topics
        from edge.bus.identity import SIM

        answer = ask(
            cfg,
            Topics.sim_set(args.zone),
            {"cmd": args.value},
            Topics.SIM_REPLY,
            "edge-alarm",
            credentials=identity_of(cfg, SIM, required=False),
            config_path=args.config,
        ).body
    except (Unavailable, NotAdmitted, CommandError) as exc:
        return exit_status(exc)
    if not answer.get("ok"):
        print(f"error: {answer.get('reason')}", file=sys.stderr)
        return EX_USAGE
    print(answer.get("said", "done"))
    return 0
