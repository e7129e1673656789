"""How the alarm service opens its SQLite files (journal, outbox) so that their write-ahead
logs stay small and a full disk neither stops an open nor a restart.

- ``wal_autocheckpoint`` of :data:`AUTOCHECKPOINT_PAGES` and ``journal_size_limit`` of
  :data:`WAL_LIMIT_BYTES`: the ``-wal`` file is copied into the database every 256 KiB and cut
  back to that size, instead of growing to ~4 MB (SQLite's default of 1000 pages) and keeping
  that size for ever. :func:`checkpoint` (``TRUNCATE``) empties it; the alarm service calls
  it periodically.
- A WAL database needs its ``-shm`` index, which SQLite creates and sizes when the first
  connection opens it: on a disk full to the last block that fails
  (``SQLITE_IOERR_SHMSIZE``). :func:`open_wal` then releases the disk reserve
  (:mod:`edge.disk`) and tries again, and as a last resort opens the file in exclusive
  locking mode, where SQLite keeps the index in the process's memory. The one writer then
  works as usual, but no other process can read the file (`edge events` says the journal is
  locked) until the writer reopens it with :func:`open_wal` once space is back.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from edge.disk import Reserve, is_disk_full

log = logging.getLogger(__name__)

AUTOCHECKPOINT_PAGES = 64
WAL_LIMIT_BYTES = 256 * 1024
CHECKPOINT_BUSY_MS = 50  # a reader in another process never stalls the alarm loop longer


def open_wal(path: Path, *, timeout: float, synchronous: str) -> tuple[sqlite3.Connection, bool]:
    """The writer's connection to ``path`` in WAL mode, and whether it had to be exclusive.

    ``sqlite3.Error`` other than a full disk propagates: the caller names the file and fix.
    """
    try:
        return _open(path, timeout, synchronous, exclusive=False), False
    except sqlite3.Error as exc:
        if not is_disk_full(exc):
            raise
    if Reserve(path.parent).release():
        try:
            return _open(path, timeout, synchronous, exclusive=False), False
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
    db = _open(path, timeout, synchronous, exclusive=True)
    log.error(
        "%s: the data disk is full: opened in exclusive mode (no other process can read it "
        "until space is back)",
        path,
    )
    return db, True


def _open(path: Path, timeout: float, synchronous: str, *, exclusive: bool) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        if exclusive:  # before the first access: SQLite then never creates the -shm file
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("%s: WAL mode refused (%s); readers may block", path, mode)
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    except BaseException:
        db.close()
        raise
    return db


def checkpoint(db: sqlite3.Connection) -> bool:
    """Copy the WAL into the database and truncate it to zero bytes; True when done.

    Waits at most CHECKPOINT_BUSY_MS for readers of other processes (a reader's open
    snapshot makes it return False: the next call tries again). A full disk, which may keep
    the database file from growing, also returns False.
    """
    old = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute(f"PRAGMA busy_timeout={CHECKPOINT_BUSY_MS}")
    try:
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.Error as exc:
        if not is_disk_full(exc) and "locked" not in str(exc):
            raise
        return False
    finally:
        db.execute(f"PRAGMA busy_timeout={int(old)}")
    return busy == 0
