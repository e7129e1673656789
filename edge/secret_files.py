"""The one rule for every secret file on the box, and the only way to read or write one.

Secrets (TLS and DC-09 keys, ONVIF and TURN passwords, the web users, the box-bus
identities) each sit in their own file under the secrets directory, never inline in
``site.toml``. Whatever the secret, the same checks apply, so an installer meets one rule and
one message:

* it is a regular file (not a FIFO, a device such as ``/dev/zero``, or a directory), never a
  symbolic link at the last component, and never read beyond a small cap (a secret is bytes
  to a few kilobytes; reading on would let a mistaken path exhaust memory);
* it belongs to root or to the user reading it, and nobody else may write it;
* others may not read it; the group may read it only where the caller says the file is
  shared with a group (``group_read=True``: the local-control credentials, shared with the
  ``edge-admin`` group).

Files that are not secret but come from a path an installer typed (public keys, the site
configuration itself) get the kind and size half of the rule through :func:`read_small_file`.

Why the kind is checked *before* opening, and again on the descriptor: opening a device has
effects of its own (``/dev/watchdog`` arms the watchdog, a serial line may block), so a
non-regular file is never opened; the second check, on the opened descriptor, closes the
window in which the path could be swapped between the two.

Writes are atomic (temporary file, fsync, rename, directory fsync) and create the file with
its final mode, so a secret is never visible with a wider mode, not even for an instant.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TypeAlias

from edge.errors import EdgeError

MAX_SECRET_BYTES = 64 * 1024
MAX_SMALL_FILE_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
StrPath: TypeAlias = "str | os.PathLike[str]"
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


class FileCheckError(EdgeError, ValueError):
    """A file the box reads is missing, of the wrong kind, too big or unreadable."""


class SecretFileError(FileCheckError):
    """A secret file is missing, of the wrong kind, too open, too big or unreadable."""


def secret_problem(
    path: StrPath, *, group_read: bool = False, missing_ok: bool = False
) -> str | None:
    """Why ``path`` may not hold a secret, or None.

    A missing file is a problem too, unless ``missing_ok`` (a file provisioned later, whose
    reader copes with its absence).
    """
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None if missing_ok else f"{_show(path)} does not exist — create it (mode 0600)"
    except (OSError, ValueError) as exc:
        return f"{_show(path)} cannot be examined ({_why(exc)}) — check the path and its directory"
    return _kind_problem(path, st) or _owner_problem(path, st, group_read)


def read_secret(
    path: StrPath,
    what: str,
    *,
    max_bytes: int = MAX_SECRET_BYTES,
    group_read: bool = False,
) -> bytes:
    """The bytes of secret file ``path`` after the checks above; ``what`` names it in errors.

    Errors never contain the file's content.
    """
    fd = _open_regular(path, what, secret=True)
    try:
        problem = _owner_problem(path, os.fstat(fd), group_read)
        if problem:
            raise SecretFileError(f"{what}: {problem}")
        return _read_capped(fd, path, what, max_bytes, SecretFileError)
    finally:
        os.close(fd)


def read_small_file(path: StrPath, what: str, *, max_bytes: int = MAX_SMALL_FILE_BYTES) -> bytes:
    """The bytes of a non-secret file an installer pointed at: a regular file (a symbolic
    link to one is fine), at most ``max_bytes``; FileCheckError otherwise."""
    fd = _open_regular(path, what, secret=False)
    try:
        return _read_capped(fd, path, what, max_bytes, FileCheckError)
    finally:
        os.close(fd)


def write_secret(
    path: StrPath,
    data: bytes,
    *,
    group_read: bool = False,
    owner: tuple[int, int] | None = None,
) -> Path:
    """Atomically replace ``path`` with ``data`` at mode 0600 (0640 with ``group_read``),
    owned by ``owner`` (uid, gid) when given (only root can give it away).

    The temporary file has a fresh random name and is created exclusively, so nothing planted
    next to the secret (a file, a symbolic link) is ever opened or reused.
    """
    import tempfile  # here: edge-alarm reads secrets but never writes one

    path = Path(path)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretFileError(f"{_show(path)}: a secret is at most {MAX_SECRET_BYTES} bytes")
    mode = 0o640 if group_read else 0o600
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (OSError, ValueError) as exc:
        raise SecretFileError(f"cannot write {_show(path)} ({_why(exc)})") from None
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, mode)  # exact: the umask neither widens nor narrows it
            if owner is not None:
                os.fchown(fd, *owner)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SecretFileError(f"cannot write {_show(path)} ({_why(exc)})") from None
    return path


# --- internals -------------------------------------------------------------------------------


def _open_regular(path: StrPath, what: str, *, secret: bool) -> int:
    """A descriptor on ``path`` once it is known to be a regular file (checked before and
    after opening, the second time on the descriptor itself). A secret's path may not end in
    a symbolic link; another file's may."""
    error = SecretFileError if secret else FileCheckError
    follow = not secret
    try:
        before = os.stat(path, follow_symlinks=follow)
    except FileNotFoundError:
        fix = "create it (mode 0600) or fix the path" if secret else "fix the path"
        raise error(f"{what}: {_show(path)} does not exist — {fix}") from None
    except (OSError, ValueError) as exc:
        raise error(f"{what}: cannot examine {_show(path)} ({_why(exc)})") from None
    problem = _kind_problem(path, before)
    if problem:
        raise error(f"{what}: {problem}")
    flags = _OPEN_FLAGS | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:
        raise error(f"{what}: cannot open {_show(path)} ({_why(exc)})") from None
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(
        after.st_mode
    ):
        os.close(fd)
        raise error(f"{what}: {_show(path)} changed while it was being opened — try again")
    return fd


def _read_capped(
    fd: int,
    path: StrPath,
    what: str,
    max_bytes: int,
    error: type[FileCheckError],
) -> bytes:
    """At most ``max_bytes`` from ``fd``; a longer file is refused, never truncated."""
    too_big = error(
        f"{what}: {_show(path)} is larger than {max_bytes} bytes, too big for a file of "
        "this kind — check the path"
    )
    if os.fstat(fd).st_size > max_bytes:
        raise too_big
    chunks: list[bytes] = []
    total = 0
    try:
        while total <= max_bytes:  # the size may lie (it may grow, /proc says 0): count bytes
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"{what}: cannot read {_show(path)} ({_why(exc)})") from None
    if total > max_bytes:
        raise too_big
    return b"".join(chunks)


def _kind_problem(path: StrPath, st: os.stat_result) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return f"{_show(path)} is a symbolic link — point the configuration at the file itself"
    if stat.S_ISDIR(st.st_mode):
        return f"{_show(path)} is a directory — point the configuration at the file in it"
    if not stat.S_ISREG(st.st_mode):
        return (
            f"{_show(path)} is not a regular file (a device, FIFO or socket) "
            "— point the configuration at a plain file"
        )
    return None


def _owner_problem(path: StrPath, st: os.stat_result, group_read: bool) -> str | None:
    if st.st_uid not in (0, os.geteuid()):
        return (
            f"{_show(path)} belongs to uid {st.st_uid}, neither root nor this service's user "
            "— chown it to the service's user (or root)"
        )
    mode = stat.S_IMODE(st.st_mode)
    allowed = 0o640 if group_read else 0o600
    if mode & ~allowed & 0o777:
        return (
            f"{_show(path)} has mode {mode:04o}, which lets other users read or change it "
            f"— chmod {allowed:o} {_show(path)}"
        )
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    """The rename itself must reach the disk too."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _show(path: StrPath) -> str:
    """A path as it may appear in a message: control characters escaped, never raw."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ValueError):
        if "null" in str(exc):
            return "the path contains a NUL byte"
        return "the path is not valid text"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "it is a symbolic link — point the configuration at the file itself"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


__all__ = [
    "MAX_SECRET_BYTES",
    "MAX_SMALL_FILE_BYTES",
    "FileCheckError",
    "SecretFileError",
    "read_secret",
    "read_small_file",
    "secret_problem",
    "write_secret",
]
