"""`edge panel arm|disarm|bypass|unbypass|output|status`: operate the panel from the box.

For installers and maintainers on site (and the demo); the central station uses signed
commands instead. Requests go to edge-alarm over the box bus and wait for its answer; the
status is said in words (edge/commands/panel_words.py): why an output is on, the link to the
central station and the outbox, alarm memory, uptime and version, times in the site's zone.

Exit status: 0 done, 1 refused by the panel (an open zone...), 64 a wrong command, 69 the
broker or edge-alarm does not answer, 77 the broker refused who you are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from edge.commands.panel_words import WhyOn, summary
from edge.errors import CommandError

JOURNAL_LOOKBACK = 500  # events read back to find why an output came on


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("panel", help="arm, disarm, bypass, outputs, status", parents=parents)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    arm = actions.add_parser("arm", help="arm a partition", parents=parents)
    arm.add_argument("partition", nargs="?")
    arm.add_argument("--part", action="store_true", help="part-set (perimeter only)")
    arm.add_argument("--force", action="store_true", help="bypass open zones and arm")
    disarm = actions.add_parser("disarm", help="disarm a partition", parents=parents)
    disarm.add_argument("partition", nargs="?")
    for name in ("bypass", "unbypass"):
        p = actions.add_parser(name, help=f"{name} a zone", parents=parents)
        p.add_argument("zone")
    out = actions.add_parser("output", help="switch a relay output", parents=parents)
    out.add_argument("output")
    out.add_argument("op", choices=["on", "off", "pulse"])
    out.add_argument("--seconds", type=float, default=None, help="pulse length")
    actions.add_parser("status", help="panel, zones and outputs", parents=parents)
    for p in actions.choices.values():
        p.add_argument(
            "--as",
            dest="identity",
            default=None,
            metavar="NAME",
            help="local box-bus user to act as (journaled as who acted); default: your "
            "login name if it is a box-bus user, else 'installer'",
        )
        p.add_argument("--json", action="store_true", help="print the raw JSON answer")
        p.set_defaults(func=run)


def request_of(args: argparse.Namespace) -> dict[str, Any]:
    action = args.action
    req: dict[str, Any] = {"action": action}
    if action == "arm":
        req.update(partition=args.partition, mode="part" if args.part else "full", force=args.force)
    elif action == "disarm":
        req["partition"] = args.partition
    elif action in ("bypass", "unbypass"):
        req["zone"] = args.zone
    elif action == "output":
        req.update(action=args.op, output=args.output, seconds=args.seconds)
    return req


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
    from edge.sitetime import site_zone

    cfg = load_config(args.config)  # a ConfigError is reported by edge.cli (exit 78)
    try:
        require_broker(cfg, args.config)  # before the MQTT client is loaded: fails fast
        from edge.bus import Topics

        watched = _link_topics(cfg) if args.action == "status" else ()
        name = args.identity or default_identity(cfg.bus.identities_dir)
        me = identity_of(cfg, name, required=args.identity is not None)
        answer = ask(
            cfg,
            Topics.local_cmd(name),
            request_of(args),
            Topics.local_reply(name),
            "edge-alarm",
            credentials=me,
            config_path=args.config,
            retained=watched,
            status_topic=Topics.ALARM_STATUS,
        )
    except (Unavailable, NotAdmitted, CommandError) as exc:
        return exit_status(exc)
    body = answer.body
    if not body.pop("ok", False):
        print(f"refused: {body.get('reason')}", file=sys.stderr)
        return 1
    body.pop("v", None)
    if watched and "link" not in body:  # the bridge's retained state ("1" / "0")
        seen = answer.retained.get(watched[0])
        body["link"] = seen.payload.decode("ascii", "replace").strip() if seen else "unknown"
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        print(summary(body, site_zone(cfg), _journal_why(cfg)))
    return 0


def _link_topics(cfg: Any) -> tuple[str, ...]:
    """The bridge's retained link state, when this site is bridged to a central station."""
    from edge.uplink.topics import link

    central = cfg.central
    return (link(cfg.site.id),) if central is not None and central.enabled else ()


def _journal_why(cfg: Any) -> WhyOn:
    """Why an output is on, from the journal's last output_on for it since it came on."""

    def why(oid: str, state: dict[str, Any]) -> str | None:
        from edge.commands.event_words import details
        from edge.errors import JournalError
        from edge.journal import Journal, journal_path

        since = state.get("since")
        try:
            with Journal(journal_path(cfg), readonly=True) as journal:
                recent = journal.query(since_ts=since or None, limit=JOURNAL_LOOKBACK)
        except (JournalError, ValueError):
            return None
        for event in reversed(recent):
            if event.kind.value == "output_on" and event.details.get("output") == oid:
                said = {k: v for k, v in event.details.items() if k not in ("output", "readback")}
                reason = said.pop("reason", None)
                words = details(said)
                return f"because: {reason or 'no reason given'}" + (f", {words}" if words else "")
        return None

    return why


def default_identity(identities_dir: str) -> str:
    """The caller's login name (``sudo`` keeps it in SUDO_USER) when it is a box-bus user,
    else the installer's identity made at first start."""
    from pathlib import Path

    from edge.bus.identity import DEFAULT_LOCAL_USER, NAME_PATTERN

    for name in (os.environ.get("SUDO_USER"), os.environ.get("USER")):
        if name and re.fullmatch(NAME_PATTERN, name) and Path(identities_dir, name).exists():
            return name
    return DEFAULT_LOCAL_USER
