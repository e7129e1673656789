"""`edge units network`: the IP allow-lists of edge-alarm and edge-broker, from the site file.

Both units ship with ``IPAddressDeny=any`` and ``IPAddressAllow=localhost``: a compromised
alarm service or broker reaches neither the LAN nor the Internet. The few hosts each one
needs are in site.toml, which systemd cannot read — the DC-09 receivers for edge-alarm, the
central broker for the bridge in edge-broker — so this command writes them into drop-ins
(``<unit>.d/50-edge-network.conf`` under /etc/systemd/system), to be run whenever [dc09] or
[central] changes, followed by ``systemctl daemon-reload`` and a restart of the two units.

A host given by name cannot be pinned: its addresses may change (a receiver's DNS
fail-over), and resolving it needs the DNS server, whose address DHCP may change too. A stale
pinned address would silently stop alarm transmission, far worse than an open egress, so a
name lifts the filter of that unit (an empty ``IPAddressDeny=`` resets it) and the command
says which host did it: give IP addresses to keep the filter.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import EX_OK, CommandError

if TYPE_CHECKING:
    from edge.config import SiteConfig

DEFAULT_DIR = "/etc/systemd/system"
DROPIN_NAME = "50-edge-network.conf"
EX_STALE = 1  # like `edge events verify`: the check ran and found a difference
APPLY = "systemctl daemon-reload && systemctl restart edge-broker edge-alarm"


@dataclass(frozen=True)
class DropIn:
    """One generated drop-in: the unit it belongs to, its text, and one line for the user."""

    unit: str
    text: str
    summary: str

    def path(self, root: Path) -> Path:
        return root / f"{self.unit}.d" / DROPIN_NAME


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "units",
        parents=parents,
        help="write the systemd drop-ins that depend on the site file",
        description="systemd drop-ins generated from the site configuration.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    network = actions.add_parser(
        "network",
        parents=parents,
        help="let edge-alarm reach the DC-09 receivers and edge-broker the central broker",
        description="Write the IP allow-lists of edge-alarm.service ([dc09] receivers) and "
        "edge-broker.service ([central] host); everything else but loopback stays blocked.",
    )
    network.add_argument(
        "--output-dir",
        default=DEFAULT_DIR,
        metavar="DIR",
        help=f"where the <unit>.d/ directories go (default {DEFAULT_DIR})",
    )
    network.add_argument(
        "--check",
        action="store_true",
        help=f"write nothing; exit {EX_STALE} when the drop-ins on disk differ from the site file",
    )
    network.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge.config import default_path, load_config

    source = str(args.config or default_path())
    cfg = load_config(source)  # a ConfigError is reported by edge.cli (exit 78)
    root = Path(args.output_dir)
    dropins = plan(cfg, source)
    if args.check:
        return _check(dropins, root)
    for dropin in dropins:
        path = dropin.path(root)
        verb = "unchanged" if _current(path) == dropin.text else "wrote"
        if verb == "wrote":
            _write(path, dropin.text)
        print(f"{verb} {path}: {dropin.summary}")
    print(f"apply with: {APPLY}")
    return EX_OK


def plan(cfg: SiteConfig, source: str) -> list[DropIn]:
    """The drop-ins for ``cfg`` (pure: no I/O, no DNS), edge-alarm first."""
    dc09 = cfg.dc09 if cfg.dc09 is not None and cfg.dc09.enabled else None
    receivers = [r.host for r in (dc09.primary, dc09.secondary, dc09.backup) if r] if dc09 else []
    central = cfg.central if cfg.central is not None and cfg.central.enabled else None
    return [
        _dropin("edge-alarm.service", "[dc09] receivers", receivers, source),
        _dropin("edge-broker.service", "[central] host", [central.host] if central else [], source),
    ]


def _dropin(unit: str, what: str, hosts: list[str], source: str) -> DropIn:
    header = [
        f"# Written by `edge units network` from {source}: do not edit. Run it again after",
        f"# changing {what}, then: {APPLY}",
    ]
    names = [h for h in hosts if _address(h) is None and h != "localhost"]
    if names:
        header += [
            f"# {what} given by name ({', '.join(names)}): an address filter cannot follow",
            "# DNS, so it is lifted for this unit. Give IP addresses to keep it.",
        ]
        body = ["IPAddressDeny="]
        summary = f"IP filter LIFTED: {what} {', '.join(names)} given by name, not address"
    else:
        extra = sorted(
            {a for a in map(_address, hosts) if a is not None and not a.is_loopback},
            key=lambda a: (a.version, a),
        )
        body = [f"IPAddressAllow={' '.join(map(str, extra))}"] if extra else []
        reach = ", ".join(["loopback", *map(str, extra)])
        summary = f"{unit.removesuffix('.service')} may reach {reach}"
    return DropIn(unit, "\n".join([*header, "[Service]", *body]) + "\n", summary)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check(dropins: list[DropIn], root: Path) -> int:
    stale = [d.path(root) for d in dropins if _current(d.path(root)) != d.text]
    for path in stale:
        print(f"{path} is missing or differs from the site file: run `edge units network`")
    if not stale:
        print(f"the drop-ins in {root} match the site file")
    return EX_STALE if stale else EX_OK


def _current(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path} ({exc}): run it as root") from None


def _write(path: Path, text: str) -> None:
    from edge.fsutil import atomic_write

    try:
        atomic_write(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise CommandError(
            f"cannot write {path} ({exc.strerror or exc}): run it as root "
            "(sudo edge units network), or give --output-dir"
        ) from None
