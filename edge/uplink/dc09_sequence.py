"""DC-09 message numbers that survive restarts: blocks of numbers reserved on disk.

A receiver may drop a message whose sequence number it saw a moment ago as a repeat of that
message. Numbers that restart at 0001 whenever edge-alarm starts would then cost alarms: in a
burst of restarts the first messages of each run reuse the numbers of the run before. So the
numbers continue across restarts, and a crash (SIGKILL, power cut) must never let one be
reused.

Writing the counter after every message would cost an fsync per alarm. Instead the file
holds the first number *not yet reserved*: before using a block of :data:`BLOCK` numbers the
store writes the end of that block (temporary file, fsync, rename, fsync of the directory),
then hands the numbers out from memory. A run that dies mid-block leaves the rest of its
block unused; the next run starts after it. At most :data:`BLOCK` numbers are skipped per
restart, so even 300 restarts do not wrap the 9999 numbers.

A disk that refuses the write (full, read-only) must not stop transmission: the store logs
what failed and how to fix it and keeps numbering in memory, so only a restart before the
disk recovers can repeat numbers.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

from edge.uplink.dc09_frame import SEQ_MAX, SEQ_MIN

log = logging.getLogger(__name__)

SEQUENCE_FILE = "dc09.seq"
BLOCK = 32  # numbers reserved per write: one fsync per 32 messages
READ_MAX = 64  # the file holds one number and a line break


def wrap(value: int) -> int:
    """``value`` folded into 1–9999: after 9999 comes 0001."""
    return (value - SEQ_MIN) % (SEQ_MAX - SEQ_MIN + 1) + SEQ_MIN


class SequenceStore:
    """Hands out DC-09 sequence numbers; persistent when given a file, else in memory only.

    :meth:`take` never blocks on the disk: call :meth:`reserve` (from a worker thread) first
    whenever :attr:`exhausted` says the current block is used up.
    """

    def __init__(self, path: Path | None = None, *, block: int = BLOCK, start: int = SEQ_MIN):
        if not 1 <= block < SEQ_MAX:
            raise ValueError(f"block must be within 1–{SEQ_MAX - 1}, not {block}")
        if not SEQ_MIN <= start <= SEQ_MAX:
            raise ValueError(f"sequence starts within {SEQ_MIN}–{SEQ_MAX}, not {start}")
        self.path = path
        self.block = block
        self._next = self._load(path) if path is not None else start
        self._left = 0 if path is not None else SEQ_MAX  # in memory: nothing to reserve

    @property
    def exhausted(self) -> bool:
        """True when the next number needs a new block reserved on disk first."""
        return self._left <= 0

    def take(self) -> int:
        """The next number (1–9999, wrapping); reserves synchronously if the caller did not."""
        if self.exhausted:
            self.reserve()
        value = self._next
        self._next = wrap(value + 1)
        if self.path is not None:
            self._left -= 1
        return value

    def reserve(self) -> None:
        """Write the end of the next block to disk, so no run can reuse the numbers in it."""
        if self.path is None or not self.exhausted:
            return
        end = wrap(self._next + self.block)
        try:
            _write_atomically(self.path, f"{end:04d}\n".encode("ascii"))
        except OSError as exc:
            log.error(
                "DC-09 sequence file %s: cannot reserve numbers %04d–%04d: %s — numbering "
                "goes on in memory; free space or fix permissions on %s, or a restart "
                "may repeat recent numbers",
                self.path,
                self._next,
                wrap(end - 1),
                exc.strerror or exc,
                self.path.parent,
            )
        self._left = self.block

    @staticmethod
    def _load(path: Path) -> int:
        try:
            with path.open("rb") as handle:
                text = handle.read(READ_MAX).decode("ascii", "replace").strip()
        except FileNotFoundError:
            return SEQ_MIN
        except OSError as exc:
            log.error(
                "DC-09 sequence file %s cannot be read (%s): numbering starts at %04d — "
                "fix its permissions (owner edge, mode 0640)",
                path,
                exc.strerror or exc,
                SEQ_MIN,
            )
            return SEQ_MIN
        if text.isdigit() and SEQ_MIN <= int(text) <= SEQ_MAX:
            return int(text)
        log.error(
            "DC-09 sequence file %s holds %r, not a number within %d–%d: numbering starts "
            "at %04d — remove the file if it was edited by hand",
            path,
            text[:20],
            SEQ_MIN,
            SEQ_MAX,
            SEQ_MIN,
        )
        return SEQ_MIN


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.EIO, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
