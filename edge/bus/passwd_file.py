"""Creating box-bus identities and the broker's password file from them.

Each identity's password is a fresh random token (256 bits), written alone in its own secret
file for the one client that uses it; the broker gets only salted PBKDF2-SHA512 hashes in
mosquitto's own format (``user:$7$<iterations>$<salt>$<hash>``, what ``mosquitto_passwd``
writes), so reading the broker's file reveals no password. The iteration count stays at
mosquitto's default: against a 256-bit random token a slower hash buys nothing, and every
CONNECT pays for it.

Ownership when run as root (first boot, ``sudo edge bus …``): each service's file goes to the
system user that runs the service, the local users' and the simulator's to root with the
``edge-admin`` group (mode 0640), the broker's hash file to the broker's user. Users or
groups that do not exist (a laptop, the demo) leave the files to whoever runs the command.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import pwd
import secrets
from collections.abc import Iterable
from pathlib import Path

from edge.bus import identity
from edge.secret_files import SecretFileError, read_secret, write_secret

ITERATIONS = 101
SALT_BYTES = 12
ADMIN_GROUP = "edge-admin"
SERVICE_USERS = {identity.ALARM: "edge", identity.VIDEO: "edge-video"}
BROKER_USER = "edge"
MAX_PASSWD_BYTES = 64 * 1024


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """mosquitto's ``$7$`` PBKDF2-SHA512 line body for ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    b64 = base64.b64encode
    return f"$7${ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def new_password() -> str:
    return secrets.token_urlsafe(32)


def owner_of(name: str) -> tuple[int, int] | None:
    """(uid, gid) the identity file of ``name`` should have, or None to keep the caller's."""
    if os.geteuid() != 0:
        return None
    if identity.shared_with_group(name):
        return _ids("root", ADMIN_GROUP)
    return _ids(SERVICE_USERS[name], SERVICE_USERS[name])


def create(identities_dir: Path, name: str) -> str:
    """Write a new password for ``name`` (replacing any) and return it."""
    # Enter, not list (as systemd/edge.tmpfiles sets it): each service opens its own file.
    Path(identities_dir).mkdir(parents=True, exist_ok=True, mode=0o711)
    password = new_password()
    write_secret(
        identity.identity_path(identities_dir, name),
        (password + "\n").encode(),
        group_read=identity.shared_with_group(name),
        owner=owner_of(name),
    )
    return password


def ensure(identities_dir: Path, names: Iterable[str]) -> list[str]:
    """Create the identities in ``names`` that have no file yet; the names created."""
    made = []
    for name in names:
        if not identity.identity_path(identities_dir, name).exists():
            create(identities_dir, name)
            made.append(name)
    return made


def names(identities_dir: Path) -> list[str]:
    """Every identity with a password file, services first."""
    found = sorted(
        p.name
        for p in Path(identities_dir).glob("*")
        if p.is_file() and not p.name.startswith(".") and p.name != identity.PASSWD_FILE
    )
    return [n for n in identity.SERVICES if n in found] + [
        n for n in found if n not in identity.SERVICES
    ]


def write_passwd(identities_dir: Path) -> Path:
    """Rebuild the broker's hash file from every identity file (run as root or their owner)."""
    lines = []
    for name in names(identities_dir):
        creds = identity.load_credentials(identities_dir, name)
        lines.append(f"{name}:{hash_password(creds.password)}")
    path = identity.identity_path(identities_dir, identity.PASSWD_FILE)
    return write_secret(path, ("\n".join(lines) + "\n").encode(), owner=broker_owner())


def broker_owner() -> tuple[int, int] | None:
    """(uid, gid) of the broker's user when root writes the broker's files, else None."""
    return _ids(BROKER_USER, BROKER_USER) if os.geteuid() == 0 else None


def passwd_users(identities_dir: str | Path) -> list[str]:
    """The user names in the broker's hash file (what the broker will admit)."""
    path = identity.identity_path(identities_dir, identity.PASSWD_FILE)
    try:
        raw = read_secret(path, "the box broker's password file", max_bytes=MAX_PASSWD_BYTES)
    except SecretFileError:
        return []
    users = []
    for line in raw.decode("utf-8", "replace").splitlines():
        user = line.split(":", 1)[0].strip()
        if user:
            users.append(user)
    return users


def remove(identities_dir: Path, name: str) -> bool:
    path = identity.identity_path(identities_dir, name)
    if not path.exists():
        return False
    path.unlink()
    return True


def _ids(user: str, group: str) -> tuple[int, int] | None:
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        return None
