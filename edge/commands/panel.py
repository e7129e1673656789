"""`edge panel arm|disarm|bypass|unbypass|output|status`: operate the panel from the box.

For installers and maintainers on site (and the demo); the central station uses signed
commands instead. Requests go to edge-alarm over the box bus and wait for its answer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from edge.errors import EX_USAGE, CommandError


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
    from edge.bus import Topics
    from edge.commands.remote import ask, identity_of
    from edge.config import load_config

    cfg = load_config(args.config)  # a ConfigError is reported by edge.cli (exit 78)
    try:
        name = args.identity or default_identity(cfg.bus.identities_dir)
        me = identity_of(cfg, name, required=args.identity is not None)
        answer = ask(
            cfg.bus.url,
            Topics.local_cmd(name),
            request_of(args),
            Topics.local_reply(name),
            "edge-alarm",
            credentials=me,
        )
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_USAGE
    if not answer.pop("ok", False):
        print(f"refused: {answer.get('reason')}", file=sys.stderr)
        return 1
    answer.pop("v", None)
    print(json.dumps(answer, indent=2, sort_keys=True) if args.json else summary(answer))
    return 0


def default_identity(identities_dir: str) -> str:
    """The caller's login name (``sudo`` keeps it in SUDO_USER) when it is a box-bus user,
    else the installer's identity made at first start."""
    from pathlib import Path

    from edge.bus.identity import DEFAULT_LOCAL_USER, NAME_PATTERN

    for name in (os.environ.get("SUDO_USER"), os.environ.get("USER")):
        if name and re.fullmatch(NAME_PATTERN, name) and Path(identities_dir, name).exists():
            return name
    return DEFAULT_LOCAL_USER


def summary(answer: dict[str, Any]) -> str:
    """The answer in one or a few lines an installer reads on a phone."""
    if "panel" in answer:
        parts = answer["panel"].get("partitions", {})
        lines = [summary({"partition": p}) for p in parts.values()]
        zones = answer["panel"].get("zones", {}).values()
        lines += [
            summary({"zone": z}) for z in zones if z.get("loop") != "normal" or z.get("bypassed")
        ]
        outs = answer.get("outputs", {})
        lines += [summary({"id": k, **v}) for k, v in sorted(outs.items())]
        if isinstance(answer.get("disk"), dict):
            lines.append(disk_summary(answer["disk"]))
        return "\n".join(lines)
    if "partition" in answer:
        p = answer["partition"]
        text = f"partition {p.get('id')}: {str(p.get('state', '?')).replace('_', ' ')}"
        if p.get("open_zones"):
            text += f"; open: {', '.join(p['open_zones'])}"
        if p.get("bypassed_zones"):
            text += f"; bypassed: {', '.join(p['bypassed_zones'])}"
        return text
    if "zone" in answer:
        z = answer["zone"]
        bypass = f", bypassed ({z.get('bypass_reason')})" if z.get("bypassed") else ""
        return f"zone {z.get('id')}: loop {z.get('loop')}{bypass}"
    if "readback" in answer:
        state = "on" if answer.get("on") else "off"
        until = f" until {answer['until']}" if answer.get("until") else ""
        readback = "on" if answer.get("readback") else "off"
        return f"output {answer.get('id')}: {state}{until} (pin reads {readback})"
    return json.dumps(answer, indent=2, sort_keys=True)


def disk_summary(disk: dict[str, Any]) -> str:
    """The data disk in one line; when full, what it means and what to do."""
    free = disk.get("free_bytes")
    room = f"{free / 1e6:.1f} MB free" if isinstance(free, int) and free >= 0 else "free space ?"
    if disk.get("state") != "full":
        return f"data disk: ok, {room}"
    held = disk.get("held") or {}
    text = (
        f"data disk: FULL since {disk.get('since')} ({room}): alarms still detected and sent; "
        f"{held.get('journal', 0)} event(s) held in memory, not yet in the journal"
    )
    if disk.get("lost"):
        text += f", {disk['lost']} lost (memory bound reached)"
    return text + f" — free space on the disk of {disk.get('path')} (docs/maintenance.md)"
