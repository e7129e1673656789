"""Who a client is on the box bus: the identities, their password files, and loading them.

The box broker admits no anonymous client. Each service has its own identity and the broker's
ACL (edge/uplink/broker_acl.py) gives each only its own topics:

* ``edge-alarm`` — the alarm service (owner ``edge``, mode 0600);
* ``edge-video`` — the video service, the process that parses network input (owner
  ``edge-video``, mode 0600): it cannot arm, bypass, drive outputs, simulate, acknowledge,
  fake the link state, or send events or command results to the central station;
* ``edge-sim`` — the loop simulator of ``backend = "sim"`` sites (root:edge-admin, 0640);
* local users (``installer`` is made at first start, ``edge bus passwd NAME`` adds one per
  person): ``edge panel`` acts under this identity, and edge-alarm journals *that* name as the
  user, because only that identity may publish on its own command topic
  (root:edge-admin, 0640).

Each identity's password sits alone in ``<bus.identities_dir>/<name>``; the broker reads only
the hashes (``passwd``). The files follow the one secret-file rule (edge/secret_files.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge.errors import BusError
from edge.secret_files import SecretFileError, read_secret

ALARM = "edge-alarm"
VIDEO = "edge-video"
SIM = "edge-sim"
SERVICES = (ALARM, VIDEO, SIM)
DEFAULT_LOCAL_USER = "installer"
PASSWD_FILE = "passwd"  # mosquitto's password file: user:$7$... hashes only
NAME_PATTERN = r"^[a-z][a-z0-9_-]{1,31}$"
RESERVED = frozenset({*SERVICES, PASSWD_FILE})
MAX_PASSWORD_BYTES = 256


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:  # never print the password, not even in a traceback
        return f"Credentials(user={self.user!r}, password='***')"


def check_name(name: str) -> str:
    """A local user name: lower-case letters, digits, '-' and '_', not a service's name."""
    if not re.fullmatch(NAME_PATTERN, name) or name in RESERVED:
        raise ValueError(
            f"{name!r} cannot name a box-bus user: use 2-32 lower-case letters, digits, '-' or "
            f"'_', starting with a letter, and none of {', '.join(sorted(RESERVED))}"
        )
    return name


def is_service(name: str) -> bool:
    return name in SERVICES


def identity_path(identities_dir: str | Path, name: str) -> Path:
    return Path(identities_dir, name)


def shared_with_group(name: str) -> bool:
    """Local users and the simulator are shared with the edge-admin group (mode 0640)."""
    return name not in (ALARM, VIDEO)


def load_credentials(identities_dir: str | Path, name: str) -> Credentials:
    """Read identity ``name``'s password; BusError saying how to fix it when it cannot."""
    path = identity_path(identities_dir, name)
    try:
        raw = read_secret(
            path,
            f"box-bus identity {name!r}",
            max_bytes=MAX_PASSWORD_BYTES,
            group_read=shared_with_group(name),
        )
    except SecretFileError as exc:
        hint = (
            "run `sudo edge bus init` to create the service identities"
            if is_service(name)
            else f"local control needs root or the edge-admin group (sudo edge …), and the "
            f"identity must exist (`sudo edge bus passwd {name}`)"
        )
        raise BusError(f"{exc}; {hint}") from None
    password = raw.decode("utf-8", "replace").strip()
    if not password or "\n" in password:
        raise BusError(f"{path} must hold one line, the password: recreate it with `edge bus init`")
    return Credentials(name, password)


def optional_credentials(identities_dir: str | Path, name: str) -> Credentials | None:
    """The identity when its file exists, else None (a bare test broker admits anonymous
    clients; the box broker does not, and then says which identity file is missing)."""
    if not identity_path(identities_dir, name).exists():
        return None
    return load_credentials(identities_dir, name)
