"""The data disk: telling "disk full" from other failures, and the space kept for that day.

Why a reserve file: SQLite needs free blocks to commit anything — even the event that says
the disk is full — and a filesystem full to the last block has none. It also needs 32 KiB
for the shared-memory index (``-shm``) it creates when it opens a WAL database, which is why
a restart on a full disk used to die at start-up. So the alarm service keeps
:data:`RESERVE_BYTES` preallocated in a plain file next to the journal; the first write that
fails with "disk full" (journal or outbox, whichever comes first) deletes it, which gives the
journal room for the fault event and the alarms that follow, and SQLite room to open its
files. The alarm service makes the file again once space is back.

Why not one of SQLite's own means: in WAL mode every commit first appends to the ``-wal``
file, so free pages inside the database file (what ``DELETE`` leaves behind) do not help a
commit, and no SQLite setting holds space back for later. A file the alarm service owns is
the one reserve that no other writer on the disk (clips, logs) can eat before it is needed.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_FILE = "disk-reserve"
RESERVE_BYTES = 2 * 1024 * 1024
# Below this much free space for the edge user the disk counts as full even before a write
# fails, so the fault is reported while the journal can still say so.
LOW_WATER_BYTES = 1024 * 1024
_CHUNK = 64 * 1024

SQLITE_FULL = 13
# SQLite cannot size or map its shared-memory index (-shm) when the disk has no block left.
_SHM_FULL = {"SQLITE_IOERR_SHMSIZE", "SQLITE_IOERR_SHMMAP"}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException | None) -> bool:
    """Is this error (or one it was raised from) a full disk or an exhausted quota?"""
    for _ in range(6):  # an error chain is short; never loop on a cycle
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == SQLITE_FULL:
                return True
            if getattr(exc, "sqlite_errorname", None) in _SHM_FULL:
                return True
            if "database or disk is full" in str(exc):
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``directory``
    (``f_bavail``: ext4 keeps 5 % for root, which the edge user cannot use); -1 if unknown."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


class Reserve:
    """The preallocated reserve file of one data directory.

    Stateless apart from the file itself, so the journal and the outbox may each hold a
    ``Reserve`` of the same directory: whichever meets the full disk first releases it.
    """

    def __init__(self, directory: str | os.PathLike[str], size: int = RESERVE_BYTES) -> None:
        self.directory = Path(directory)
        self.path = self.directory / RESERVE_FILE
        self.size = size

    def present(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def release(self) -> int:
        """Delete the reserve; returns the bytes given back to the disk (0 if none was left)."""
        try:
            size = self.path.stat().st_size
            self.path.unlink()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.error("cannot release the disk reserve %s: %s", self.path, exc)
            return 0
        log.warning(
            "data disk full: released the %d KiB reserve %s to keep the journal going",
            size // 1024,
            self.path,
        )
        return size

    def ensure(self) -> bool:
        """Make the reserve if it is missing and the disk can spare it with room to go;
        True when it is in place. Never fills the disk: it needs ``size`` + LOW_WATER free."""
        if self.present():
            return True
        free = free_bytes(self.directory)
        if free < self.size + LOW_WATER_BYTES:
            return False
        tmp = self.path.with_name(f".{RESERVE_FILE}.tmp")
        try:
            _allocate(tmp, self.size)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("cannot make the disk reserve %s yet: %s", self.path, exc)
            return False
        log.info("disk reserve %s in place (%d KiB)", self.path, self.size // 1024)
        return True


def _allocate(path: Path, size: int) -> None:
    """Blocks really allocated (not a sparse file): fallocate, or zeros where unsupported."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            zeros = bytes(_CHUNK)
            for offset in range(0, size, _CHUNK):
                os.pwrite(fd, zeros[: min(_CHUNK, size - offset)], offset)
        os.fsync(fd)
    finally:
        os.close(fd)
