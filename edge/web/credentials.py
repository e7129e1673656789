"""The per-box users of the local web page: one ``user:scrypt:N:r:p:salt:hash`` line each.

There is no default password: a box ships with no user file, and until an installer runs
`edge web passwd USER` on it every request to the web server is refused. Passwords are kept
only as scrypt hashes (memory-hard, so a stolen SD card does not give them away cheaply), in a
secret file (mode 0600, :mod:`edge.secret_files`) under /etc/edge/secrets/, owned by the
user of the service that reads it. Short, common passwords and ones made of the user name or
the site id are refused (:mod:`edge.web.passwords`).

:class:`Credentials` re-reads the file when it changes, so a new or changed password takes
effect without restarting edge-video. A damaged line costs only that user, with a warning
naming the line, never the whole file.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
import os
import re
import threading
from pathlib import Path

from edge.errors import CommandError
from edge.secret_files import SecretFileError, read_secret, write_secret
from edge.web.files import read_as_owner
from edge.web.passwords import MAX_LENGTH, MIN_LENGTH, password_problem

log = logging.getLogger(__name__)

USER_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,32}")
MIN_PASSWORD = MIN_LENGTH
MAX_PASSWORD = MAX_LENGTH  # a bound on what one login makes scrypt hash
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MiB and ~50-150 ms per check on a Pi
SALT_BYTES = 16
HASH_BYTES = 32
WHAT = "web users file"
PASSWD_HINT = "run `edge web passwd USER` on the box (as root) to create a web user"

# Bounds on the parameters a line may carry (a hand-edited file must not make a login cost
# gigabytes or minutes).
_MAX_N, _MAX_R, _MAX_P = 2**20, 16, 16
_MAX_MEMORY = 256 * 1024 * 1024


class CredentialsError(CommandError):
    """A user name or password that cannot be stored; the message says what is accepted."""


@dataclasses.dataclass(frozen=True)
class _Hash:
    """One stored password: its scrypt parameters, salt and derived key."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, password: str) -> bool:
        derived = _scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(derived, self.digest)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + (1 << 20)  # what OpenSSL asks for, plus a margin
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length
    )


# Checked when the user is unknown, so that a wrong user name costs as long as a wrong password
# and response times do not tell which user names exist.
_DUMMY = _Hash(SCRYPT_N, SCRYPT_R, SCRYPT_P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES)


def check_user(user: str) -> None:
    """CredentialsError unless ``user`` is 1 to 32 of letters, digits and ``_ . @ -``."""
    if not USER_PATTERN.fullmatch(user):
        raise CredentialsError(
            f"user name {user!r} is not allowed: use 1 to 32 letters, digits or _ . @ - "
            "(e.g. installer or jane.doe)"
        )


def check_password(password: str, *, user: str = "", site_id: str = "") -> None:
    """CredentialsError unless ``password`` is long, uncommon and unrelated to the names."""
    problem = password_problem(password, user=user, site_id=site_id)
    if problem:
        raise CredentialsError(problem)


def hash_line(user: str, password: str) -> str:
    """The file line for ``user`` with a fresh salt (no trailing newline)."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    b64 = base64.b64encode
    return (
        f"{user}:scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:"
        f"{b64(salt).decode('ascii')}:{b64(digest).decode('ascii')}"
    )


def parse_line(line: str) -> tuple[str, _Hash]:
    """``(user, hash)`` of one file line; ValueError says what is wrong with it."""
    fields = line.split(":")
    if len(fields) != 7:
        raise ValueError(f"expected 7 fields separated by ':', found {len(fields)}")
    user, scheme, n_text, r_text, p_text, salt_text, digest_text = fields
    if not USER_PATTERN.fullmatch(user):
        raise ValueError(f"user name {user!r} is not allowed")
    if scheme != "scrypt":
        raise ValueError(f"unknown hash scheme {scheme!r} (only scrypt is read)")
    try:
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt = base64.b64decode(salt_text, validate=True)
        digest = base64.b64decode(digest_text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"unreadable number or base64: {exc}") from None
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        raise ValueError(f"scrypt parameters N={n} r={r} p={p} are out of range")
    if 128 * r * n > _MAX_MEMORY:
        raise ValueError(f"scrypt parameters N={n} r={r} need more than 256 MiB")
    if len(salt) < 8 or not 16 <= len(digest) <= 64:
        raise ValueError("salt or hash has the wrong length")
    return user, _Hash(n, r, p, salt, digest)


def _read_lines(path: Path, owner: tuple[int, int] | None = None) -> list[str]:
    """The file's lines through the secret-file rule; [] when it does not exist.

    The rule accepts a file that belongs to root or to the reader, so root reads a file it
    gave to the service user (``owner``) with that user's effective uid, which also proves
    that the service can read it.
    """
    if not os.path.lexists(path):
        return []
    try:
        return read_as_owner(path, WHAT, owner).decode("utf-8").splitlines()
    except SecretFileError as exc:
        raise CredentialsError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise CredentialsError(f"{WHAT}: {path} is not UTF-8 text ({exc})") from None


def _owner(line: str) -> str:
    return line.split(":", 1)[0]


def _write_lines(path: Path, lines: list[str], owner: tuple[int, int] | None) -> None:
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    write_secret(path, data, owner=owner)


def set_password(
    path: str | os.PathLike[str],
    user: str,
    password: str,
    *,
    site_id: str = "",
    owner: tuple[int, int] | None = None,
) -> bool:
    """Create ``user`` or change its password; True when the user is new.

    ``owner`` (uid, gid): who the file belongs to afterwards (root only may give it away).
    Other lines are kept as they are, damaged ones included (they are the installer's to fix).
    """
    check_user(user)
    check_password(password, user=user, site_id=site_id)
    target = Path(path)
    lines = _read_lines(target, owner)
    kept = [line for line in lines if _owner(line) != user]
    _write_lines(target, [*kept, hash_line(user, password)], owner)
    return len(kept) == len(lines)


def remove_user(
    path: str | os.PathLike[str], user: str, *, owner: tuple[int, int] | None = None
) -> bool:
    """Remove ``user``; False when the file has no such user (nothing is written then)."""
    target = Path(path)
    lines = _read_lines(target, owner)
    kept = [line for line in lines if _owner(line) != user]
    if len(kept) == len(lines):
        return False
    _write_lines(target, kept, owner)
    return True


def users(path: str | os.PathLike[str], *, owner: tuple[int, int] | None = None) -> list[str]:
    """User names of the file in file order (damaged lines left out); [] when it is missing."""
    names: list[str] = []
    for line in _read_lines(Path(path), owner):
        try:
            user, _ = parse_line(line)
        except ValueError:
            continue
        if user not in names:
            names.append(user)
    return names


class Credentials:
    """The user file as the web server checks it, re-read whenever it changes on disk.

    Thread-safe: the server runs the (slow, by design) scrypt checks in worker threads. A
    successful check is remembered as an HMAC under a per-process key until the file changes,
    so a logged-in page does not cost the video process one scrypt per request.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | str | None = None
        self._users: dict[str, _Hash] = {}
        self._remembered: dict[str, bytes] = {}
        self._key = os.urandom(32)

    @property
    def configured(self) -> bool:
        """True when the file holds at least one usable user."""
        with self._lock:
            self._refresh()
            return bool(self._users)

    def verify(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s; as slow for an unknown user as for a known one."""
        with self._lock:
            self._refresh()
            stored = self._users.get(user)
            remembered = self._remembered.get(user)
        if len(password) > MAX_PASSWORD:
            return False
        token = hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()
        if stored is not None and remembered is not None and hmac.compare_digest(token, remembered):
            return True
        ok = (stored or _DUMMY).matches(password) and stored is not None
        if ok:
            with self._lock:
                if self._users.get(user) is stored:
                    self._remembered[user] = token
        return ok

    @property
    def problem(self) -> str | None:
        """Why the file cannot be used (unreadable, too open …), None when it can."""
        with self._lock:
            self._refresh()
            return self._stamp if isinstance(self._stamp, str) else None

    def has(self, user: str) -> bool:
        """Whether ``user`` exists (for the login guard's bookkeeping, never for answers)."""
        with self._lock:
            return user in self._users

    def _refresh(self) -> None:
        """Reload when the file's identity, size or time changed (writes rename a new file)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            self._load(None, [])
            return
        except OSError as exc:
            self._failed(f"cannot read {self.path}: {exc}")
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode, st.st_uid)
        if stamp == self._stamp:
            return
        try:
            lines = read_secret(self.path, WHAT).decode("utf-8").splitlines()
        except SecretFileError as exc:
            self._failed(str(exc))
            return
        except UnicodeDecodeError as exc:
            self._failed(f"{self.path} is not UTF-8 text ({exc})")
            return
        self._load(stamp, lines)

    def _failed(self, message: str) -> None:
        if self._stamp != message:  # log each distinct failure once, not on every request
            log.error("web users: %s; every web request is refused", message)
        self._stamp, self._users, self._remembered = message, {}, {}

    def _load(self, stamp: tuple[int, ...] | None, lines: list[str]) -> None:
        if stamp is None and self._stamp is None and not self._users:
            return
        found: dict[str, _Hash] = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                user, stored = parse_line(line.strip())
            except ValueError as exc:
                log.warning("%s line %d skipped: %s", self.path, number, exc)
                continue
            if user in found:
                log.warning("%s line %d skipped: user %r appears twice", self.path, number, user)
                continue
            found[user] = stored
        if not found:
            log.warning("web users: no usable user in %s: %s", self.path, PASSWD_HINT)
        self._stamp, self._users, self._remembered = stamp, found, {}
