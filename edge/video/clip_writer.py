"""The thread that writes one clip while it is recorded, fed through a bounded backlog.

The camera's packets arrive on the event loop, which must never wait for the disk; muxing and
the snapshot's decoding must not run there either. So each clip being recorded has a writer
thread running its :class:`~edge.video.mp4.Mp4Recorder`, and the loop hands packets over
with :meth:`ClipWriter.put`, which never blocks. The backlog between them is bounded in
bytes (BACKLOG_BYTES: 30 s at 2 Mb/s, 8 s at 8 Mb/s); when the disk stalls that long, ``put``
refuses the packet and the clip is cut there (what was written is kept). A failure to write
(disk full, I/O error) stops the thread; ``put`` refuses from then on and :meth:`close`
raises it as a :class:`~edge.video.mp4.ClipError` after removing the half-written file.
"""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path

import av

from edge.video.frames import EncodedPacket
from edge.video.mp4 import ClipError, Mp4Recorder, Mp4Result

log = logging.getLogger(__name__)

BACKLOG_BYTES = 8 * 1024 * 1024


class ClipWriter:
    """Writes one clip in its own thread; ``put`` from the loop, ``close`` from a worker."""

    def __init__(
        self,
        camera: str,
        path: Path,
        snapshot_at_s: float | None,
        *,
        backlog_bytes: int = BACKLOG_BYTES,
    ) -> None:
        self.camera = camera
        self.path = path
        self.backlog_bytes = backlog_bytes
        self.error: ClipError | None = None
        self._recorder = Mp4Recorder(path, snapshot_at_s)
        self._items: collections.deque[EncodedPacket] = collections.deque()
        self._queued = 0
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"clip-{camera}", daemon=True)
        self._thread.start()

    def put(self, pkt: EncodedPacket) -> bool:
        """Hand a packet over (never blocks); False when the backlog is full or writing failed."""
        with self._cond:
            if self.error is not None or self._closing:
                return False
            if self._queued + len(pkt.data) > self.backlog_bytes:
                return False
            self._items.append(pkt)
            self._queued += len(pkt.data)
            self._cond.notify()
        return True

    @property
    def backlog(self) -> int:
        """Bytes handed over and not written yet."""
        return self._queued

    def close(self, end_s: float | None) -> Mp4Result:
        """Write the backlog, then the final MP4 (blocking); ClipError if writing failed."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        if self.error is not None:
            self._recorder.abort()
            raise self.error
        return self._recorder.finish(end_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items:
                    return
                pkt = self._items.popleft()
            try:
                self._recorder.add(pkt)
            except (ClipError, OSError, av.FFmpegError) as exc:
                self._fail(exc if isinstance(exc, ClipError) else self._error(exc))
                return
            except Exception as exc:  # a bug: the clip is lost, the camera goes on
                log.exception("camera %s: writing %s failed", self.camera, self.path)
                self._fail(self._error(exc))
                return
            finally:
                with self._cond:
                    self._queued -= len(pkt.data)

    def _error(self, exc: BaseException) -> ClipError:
        error = ClipError(f"camera {self.camera}: cannot write {self.path}: {exc}")
        error.__cause__ = exc
        return error

    def _fail(self, error: ClipError) -> None:
        with self._cond:
            self.error = error
            self._queued -= sum(len(p.data) for p in self._items)
            self._items.clear()
