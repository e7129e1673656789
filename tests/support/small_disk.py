"""A small real filesystem for disk-full tests, and a plain file to fill it with.

The kernel, not our code, must say "No space left on device". Tried in this order: a tmpfs
of the given size (``mount -t tmpfs -o size=…``, needs root), then a loop-mounted ext4 image
(``mkfs.ext4`` + ``mount -o loop``). If neither can be mounted the test is skipped with the
reason. ext4 keeps 5 % for root, and the tests run as root: the image is made with
``-m 0`` so "full" means the same for root and for the edge user.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CHUNKS = (1024 * 1024, 64 * 1024, 4096, 512)


@dataclass
class SmallDisk:
    path: Path
    kind: str  # "tmpfs" or "ext4 image"
    filler: Path

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Append to the filler file until the disk refuses; returns the bytes written."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in CHUNKS:
                block = b"\0" * size
                while True:
                    try:
                        written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def release(self) -> None:
        """Free the space the filler took."""
        self.filler.unlink(missing_ok=True)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def small_disk(path: Path, size_bytes: int) -> Iterator[SmallDisk]:
    """Mount a filesystem of about ``size_bytes`` on ``path`` (created) for the block."""
    path.mkdir(parents=True, exist_ok=True)
    image: Path | None = None
    reasons = []
    tmpfs = _run("mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0750", "tmpfs", str(path))
    if tmpfs.returncode == 0:
        kind = "tmpfs"
    else:
        reasons.append(f"tmpfs: {tmpfs.stderr.strip()}")
        fd, name = tempfile.mkstemp(suffix=".ext4")
        os.close(fd)
        image = Path(name)
        os.truncate(image, max(size_bytes, 2 * 1024 * 1024))
        made = shutil.which("mkfs.ext4") and _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        loop = _run("mount", "-o", "loop", str(image), str(path)) if made else None
        if loop is None or loop.returncode != 0:
            image.unlink(missing_ok=True)
            reasons.append(f"ext4 image: {loop.stderr.strip() if loop else 'no mkfs.ext4'}")
            pytest.skip("no small filesystem can be mounted here: " + "; ".join(reasons))
        kind = "ext4 image"
    try:
        yield SmallDisk(path, kind, path / "filler")
    finally:
        for _ in range(50):  # a process of the test may still be closing its files
            if _run("umount", str(path)).returncode == 0:
                break
            subprocess.run(["sleep", "0.1"], check=False)
        else:
            _run("umount", "-l", str(path))
        if image is not None:
            image.unlink(missing_ok=True)
