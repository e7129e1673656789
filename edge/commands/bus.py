"""`edge bus init|passwd|remove|users`: the identities admitted on the box bus.

`init` runs at first boot (and before every broker start, as root: systemd's ``+`` prefix):
it creates the identities that are missing — the services', the simulator's and the
installer's — with their owners and modes, and rebuilds the broker's hash file. It never
replaces an existing password. `passwd NAME` gives a person (or a service, to rotate it) a
new password; the broker reloads its files on `systemctl reload edge-broker`, and a service
whose password was rotated must be restarted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge.errors import EX_OK, EX_USAGE


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bus",
        parents=parents,
        help="identities of the box bus (services and local users)",
        description="Identities admitted by the box broker; files in [bus] identities_dir.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    actions.add_parser(
        "init", parents=parents, help="create missing identities and the broker's hash file"
    )
    passwd = actions.add_parser(
        "passwd", parents=parents, help="create a local user, or give an identity a new password"
    )
    passwd.add_argument("name", metavar="NAME")
    remove = actions.add_parser("remove", parents=parents, help="delete a local user")
    remove.add_argument("name", metavar="NAME")
    actions.add_parser("users", parents=parents, help="list the identities")
    for p in actions.choices.values():
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge.bus import identity, passwd_file
    from edge.config import load_config
    from edge.secret_files import SecretFileError

    cfg = load_config(args.config)  # a ConfigError is reported by edge.cli (exit 78)
    root = Path(cfg.bus.identities_dir)
    try:
        if args.action == "init":
            wanted = [*identity.SERVICES, identity.DEFAULT_LOCAL_USER]
            made = passwd_file.ensure(root, wanted)
            passwd_file.write_passwd(root)
            print(f"created: {', '.join(made)}" if made else "every identity already exists")
        elif args.action == "passwd":
            name = args.name if identity.is_service(args.name) else identity.check_name(args.name)
            passwd_file.create(root, name)
            passwd_file.write_passwd(root)
            print(f"new password for {name} in {identity.identity_path(root, name)}")
            print(_after_change(name))
        elif args.action == "remove":
            if identity.is_service(args.name):
                raise ValueError(f"{args.name} is a service identity: it cannot be removed")
            if not passwd_file.remove(root, args.name):
                raise ValueError(f"no identity {args.name!r} in {root} (see `edge bus users`)")
            passwd_file.write_passwd(root)
            print(f"removed {args.name}")
            print(_after_change(args.name))
        else:
            admitted = set(passwd_file.passwd_users(root))
            for name in passwd_file.names(root):
                note = "" if name in admitted else "  (not yet admitted: run `edge bus init`)"
                kind = "service" if identity.is_service(name) else "local user"
                print(f"{name:<16} {kind}{note}")
        if args.action in ("passwd", "remove") and Path(cfg.paths.run_dir).is_dir():
            from edge.uplink.broker import write_acl

            write_acl(cfg)  # the running broker takes both files on reload (HUP)
    except (ValueError, SecretFileError, PermissionError, OSError) as exc:
        print(f"error: {_words(exc)}", file=sys.stderr)
        return EX_USAGE
    return EX_OK


def _after_change(name: str) -> str:
    from edge.bus import identity

    text = "the broker takes it on `systemctl reload edge-broker`"
    if identity.is_service(name):
        text += f"; then restart {name} (`systemctl restart {name}`)"
    return text


def _words(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"{exc.filename}: permission denied; the identities are root's: use sudo"
    return str(exc)
