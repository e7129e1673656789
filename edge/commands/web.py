"""`edge web [passwd|users|remove|cert]`: the users and the certificate of the local web page.

There is no default password, so an installer creates the first user on the box itself
(`edge web passwd installer`). The running web server re-reads the file on its next request:
no restart is needed. Run as root, the command leaves the file to the user of the service
that reads it (``edge-video``, else ``edge``): a root-owned 0600 file would refuse every login.
`edge web cert` shows (and makes, when missing) the box's own HTTPS certificate and its
SHA-256 fingerprint, which the installer compares with the one the browser shows.
"""

from __future__ import annotations

import argparse
import getpass
import os
import pwd
import shlex
import sys
from pathlib import Path
from typing import Any

from edge.errors import EX_OK, CommandError

SERVICE_USERS = ("edge-video", "edge")  # the web server runs inside edge-video


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "web",
        parents=parents,
        help="manage the users and the certificate of the local web page (live view on the LAN)",
        description="Users of the box's local web page ([web] credentials_file) and its "
        "HTTPS certificate.",
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
    actions.add_parser(
        "cert",
        parents=parents,
        help="show the HTTPS certificate's SHA-256 fingerprint (made when missing)",
    )
    for p in actions.choices.values():
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge.config import load_config

    cfg = load_config(args.config)
    if args.action == "cert":
        return _cert(cfg)
    from edge.web import credentials

    path = Path(cfg.web.credentials_file)
    owner, hint = service_owner(path)
    try:
        if args.action == "passwd":
            credentials.check_user(args.user)
            password = _read_password(args.stdin, args.user, cfg.site.id)
            created = credentials.set_password(
                path, args.user, password, site_id=cfg.site.id, owner=owner
            )
            verb = "created user" if created else "changed the password of"
            print(f"{verb} {args.user} in {path}")
        elif args.action == "users":
            names = credentials.users(path, owner=owner)
            for name in names:
                print(name)
            if not names:
                print(f"no web user in {path}: {credentials.PASSWD_HINT}", file=sys.stderr)
            return EX_OK
        elif not credentials.remove_user(path, args.user, owner=owner):
            raise CommandError(f"no user {args.user!r} in {path} (see `edge web users`)")
        else:
            print(f"removed user {args.user} from {path}")
    except PermissionError as exc:
        raise CommandError(f"cannot access {path}: {exc.strerror}: run it as root") from exc
    except OSError as exc:
        raise CommandError(f"cannot update {path}: {exc}") from exc
    if hint:
        print(hint, file=sys.stderr)
    return EX_OK


def service_owner(
    path: Path, names: tuple[str, ...] = SERVICE_USERS
) -> tuple[tuple[int, int] | None, str]:
    """``((uid, gid), "")`` of the first service user that exists, when running as root;
    ``(None, what to run)`` when none exists; ``(None, "")`` when not root (the file stays
    the caller's, who is then the service's user or root's helper)."""
    if os.geteuid() != 0:
        return None, ""
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return (entry.pw_uid, entry.pw_gid), ""
    first = names[0]
    quoted = shlex.quote(str(path))
    return None, (
        f"warning: no user {' or '.join(names)} on this box, so {path} stays root's and the web "
        f"server cannot read it unless it runs as root. Once the service user exists, run:\n"
        f"  chown {first}:{first} {quoted} && chmod 600 {quoted}"
    )


def _cert(cfg: Any) -> int:
    from edge.errors import ConfigError
    from edge.web import tls

    web = cfg.web
    if not web.https:
        print("web.https is false: the web page is plain HTTP, there is no certificate")
        return EX_OK
    if web.tls_cert:
        path, made = Path(web.tls_cert), False
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"web.tls_cert: cannot read {path}: {exc.strerror}") from exc
    else:
        owner, hint = service_owner(tls.own_certificate_path(web))
        try:
            path, made = tls.ensure_certificate(web, cfg.site.id, owner=owner)
            pem = tls.read_certificate(path, owner)
        except ConfigError as exc:
            raise CommandError("; ".join(exc.problems)) from exc
        if hint:
            print(hint, file=sys.stderr)
    try:
        fingerprint = tls.fingerprint(pem)
    except ValueError as exc:
        raise CommandError(f"{path}: {exc}: give a PEM certificate") from exc
    print(f"{'made ' if made else ''}certificate {path}")
    print(f"SHA-256 fingerprint: {fingerprint}")
    print(
        "The browser warns that the certificate is not trusted: check that it shows this "
        "fingerprint before you accept it."
    )
    return EX_OK


def _read_password(from_stdin: bool, user: str, site_id: str) -> str:
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

    check_password(password, user=user, site_id=site_id)
    return password
