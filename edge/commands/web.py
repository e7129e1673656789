"""`edge web [passwd|users|remove]`: the users of the box's local web page.

There is no default password, so an installer creates the first user on the box itself
(`edge web passwd installer`). The running web server re-reads the file on its next request:
no restart is needed.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from edge.errors import EX_OK, CommandError


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "web",
        parents=parents,
        help="manage the users of the local web page (live view on the LAN)",
        description="Users of the box's local web page; the file is [web] credentials_file.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    passwd = actions.add_parser(
        "passwd", parents=parents, help="create a user or change its password"
    )
    passwd.add_argument("user", metavar="USER", help="user name: letters, digits, _ . @ -")
    passwd.add_argument(
        "--stdin",
        action="store_true",
        help="read the password from one line of standard input instead of prompting",
    )
    actions.add_parser("users", parents=parents, help="list the user names")
    remove = actions.add_parser("remove", parents=parents, help="delete a user")
    remove.add_argument("user", metavar="USER")
    for p in actions.choices.values():
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.web import credentials

    path = Path(load_config(args.config).web.credentials_file)
    try:
        if args.action == "passwd":
            credentials.check_user(args.user)
            password = _read_password(args.stdin)
            created = credentials.set_password(path, args.user, password)
            print(
                f"{'created user' if created else 'changed the password of'} {args.user} in {path}"
            )
        elif args.action == "users":
            names = credentials.users(path)
            for name in names:
                print(name)
            if not names:
                print(f"no web user in {path}: {credentials.PASSWD_HINT}", file=sys.stderr)
        elif not credentials.remove_user(path, args.user):
            raise CommandError(f"no user {args.user!r} in {path} (see `edge web users`)")
        else:
            print(f"removed user {args.user} from {path}")
    except PermissionError as exc:
        raise CommandError(f"cannot access {path}: {exc.strerror}: run it as root") from exc
    except OSError as exc:
        raise CommandError(f"cannot update {path}: {exc}") from exc
    return EX_OK


def _read_password(from_stdin: bool) -> str:
    """Prompt twice on a terminal; otherwise (or with --stdin) read one line."""
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise CommandError("no password on standard input: pipe one line into --stdin")
        password = line.rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise CommandError("the two passwords differ: nothing changed, try again")
    from edge.web.credentials import check_password

    check_password(password)
    return password
