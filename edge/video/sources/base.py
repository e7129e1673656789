"""What a camera source is, and the machinery every source shares.

A source yields one stream interleaving encoded packets, analysis luma frames and state
changes (:class:`SourceState`: the camera was lost or came back, so the service can journal
video loss / restore). Blocking work (demuxing, decoding, encoding, camera callbacks) runs in
a thread; the asyncio side receives through a :class:`FrameQueue`, which is bounded and has a
drop policy that keeps the H.264 stream decodable (aiortc's unbounded player queue is what
we do not copy). :class:`ThreadedSource` runs a source's session in that thread and
reconnects with jittered exponential backoff.

This module knows no backend: each backend imports it, and
:func:`edge.video.sources.factory.open_source` picks one for a camera.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import threading
from collections.abc import AsyncIterator
from fractions import Fraction
from typing import Protocol

import av.error
import numpy as np
import numpy.typing as npt

from edge.errors import HardwareError
from edge.video.frames import EncodedPacket, LumaFrame

log = logging.getLogger(__name__)

QUEUE_ITEMS = 256  # about 8 s of packets and luma frames at 15 fps: room for a slow consumer
BACKOFF = (0.5, 30.0)  # first and longest delay between reconnection attempts (s)
JOIN_S = 5.0


class SourceError(HardwareError):
    """A camera cannot be opened or stopped delivering; the source retries with backoff."""


@dataclasses.dataclass(frozen=True)
class SourceState:
    """The camera's video went away (``up`` False) or came back; ``reason`` says why."""

    camera: str
    up: bool
    reason: str


Item = EncodedPacket | LumaFrame | SourceState


class Source(Protocol):
    """A camera. ``packets`` is an async generator, so it is declared without ``async``."""

    camera: str

    def packets(self) -> AsyncIterator[Item]: ...

    async def close(self) -> None: ...


def analysis_stride(height: int, rows: int) -> int:
    """Integer decimation that brings ``height`` down to about ``rows`` (never below it)."""
    return max(1, height // rows)


def luma_frame(
    camera: str, y: npt.NDArray[np.uint8], pts: int, time_base: Fraction, stride: int
) -> LumaFrame:
    """A decimated copy of a Y plane (the plane itself is usually a reused buffer)."""
    return LumaFrame(camera, pts, time_base, y[::stride, ::stride].copy())


@dataclasses.dataclass
class QueueStats:
    """What the queue had to drop; a growing ``dropped_packets`` is a too-slow consumer."""

    dropped_luma: int = 0
    dropped_packets: int = 0


class _End:
    pass


@dataclasses.dataclass(frozen=True)
class _Failure:
    exc: BaseException


_Slot = Item | _End | _Failure


class FrameQueue:
    """Bounded hand-over from a producer thread to an asyncio consumer.

    When full, a live source must not block (the camera would overrun), so room is made:
    the oldest luma frame goes first (analysis can skip a frame); when only packets are
    queued, packets are dropped from the oldest up to the next keyframe, so what the consumer
    receives stays decodable, and if no keyframe is queued, everything queued is dropped and
    the producer's packets are refused until the next keyframe. Drops are counted and logged.
    A non-live producer (a file, a synthetic scene not in real time) blocks instead.
    """

    def __init__(self, camera: str, capacity: int = QUEUE_ITEMS, *, block: bool = False) -> None:
        self.camera = camera
        self.capacity = capacity
        self.block = block
        self.stats = QueueStats()
        self._items: collections.deque[_Slot] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._ended = False
        self._skip_to_key = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the consumer's loop (called from it before the producer starts)."""
        self._loop = loop
        self._ready = asyncio.Event()

    # -- producer side (any thread) ----------------------------------------------------------
    def put(self, item: Item) -> None:
        """Queue ``item``, making room by the drop policy (or waiting, if ``block``)."""
        with self._cond:
            if self._closed or not self._admit(item):
                return
            while len(self._items) >= self.capacity and not self._closed:
                if not self.block:
                    if not self._make_room(item):
                        return
                    break
                self._cond.wait()
            if self._closed:
                return
            self._items.append(item)
        self._wake()

    def restart(self) -> None:
        """A new stream starts: refuse its packets until its first keyframe."""
        with self._cond:
            self._skip_to_key = True

    def finish(self) -> None:
        """The producer is done: the consumer ends after what is queued."""
        self._terminate(_End())

    def fail(self, exc: BaseException) -> None:
        """The producer hit a bug: the consumer raises it after what is queued."""
        self._terminate(_Failure(exc))

    def close(self) -> None:
        """Stop now: drop what is queued, release a blocked producer, end the consumer."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._items.append(_End())
            self._cond.notify_all()
        self._wake()

    def _terminate(self, slot: _Slot) -> None:
        with self._cond:
            if self._ended or self._closed:
                return
            self._ended = True
            self._items.append(slot)  # may exceed capacity by one: the end must get through
        self._wake()

    def _admit(self, item: Item) -> bool:
        if not isinstance(item, EncodedPacket) or not self._skip_to_key:
            return True
        if item.keyframe:
            self._skip_to_key = False
            return True
        self.stats.dropped_packets += 1
        return False

    def _make_room(self, incoming: Item) -> bool:
        """Drop by the policy; False when ``incoming`` itself is what gets dropped."""
        for i, slot in enumerate(self._items):
            if isinstance(slot, LumaFrame):
                del self._items[i]
                self.stats.dropped_luma += 1
                return True
        if isinstance(incoming, LumaFrame):
            self.stats.dropped_luma += 1
            return False
        dropped = self._drop_to_keyframe()
        log.warning(
            "camera %s: consumer too slow, dropped %d packets to the next keyframe",
            self.camera,
            dropped,
        )
        if dropped == 0:  # full of state changes only: the oldest goes
            self._items.popleft()
        return self._admit(incoming)

    def _drop_to_keyframe(self) -> int:
        packets = [i for i, s in enumerate(self._items) if isinstance(s, EncodedPacket)]
        doomed: list[int] = []
        for n, i in enumerate(packets):
            slot = self._items[i]
            if n > 0 and isinstance(slot, EncodedPacket) and slot.keyframe:
                break
            doomed.append(i)
        else:
            self._skip_to_key = bool(packets)  # no keyframe queued: wait for the next one
        for i in reversed(doomed):
            del self._items[i]
        self.stats.dropped_packets += len(doomed)
        return len(doomed)

    def _wake(self) -> None:
        loop, ready = self._loop, self._ready
        if loop is None or ready is None:
            return
        with contextlib.suppress(RuntimeError):  # the consumer's loop is closed: nobody to wake
            loop.call_soon_threadsafe(ready.set)

    # -- consumer side (the asyncio loop) ----------------------------------------------------
    async def get(self) -> Item | None:
        """The next item; None once the producer finished or the queue was closed."""
        assert self._ready is not None, "bind() the queue to the loop first"
        while True:
            self._ready.clear()
            with self._cond:
                if self._items:
                    slot = self._items.popleft()
                    self._cond.notify()
                    break
            await self._ready.wait()
        if isinstance(slot, _End):
            return None
        if isinstance(slot, _Failure):
            raise slot.exc
        return slot


class ThreadedSource:
    """A source whose blocking session runs in a thread, reconnecting with backoff.

    Subclasses implement :meth:`_session`: open the camera, :meth:`emit` what it produces
    until :attr:`_stop` is set (return False) or the stream ends for good (return True), and
    raise :class:`SourceError` (or let PyAV / OS errors through) when the camera is lost.
    """

    def __init__(
        self,
        camera: str,
        *,
        live: bool = True,
        capacity: int = QUEUE_ITEMS,
        backoff: tuple[float, float] = BACKOFF,
    ) -> None:
        self.camera = camera
        self.queue = FrameQueue(camera, capacity, block=not live)
        self.backoff = backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._up: bool | None = None
        self._state_lock = threading.Lock()  # luma may come from a decoder thread
        self._produced = False

    async def packets(self) -> AsyncIterator[Item]:
        """Start the camera (first call only) and yield what it produces."""
        if self._thread is None:
            self.queue.bind(asyncio.get_running_loop())
            self._thread = threading.Thread(
                target=self._run, name=f"video-{self.camera}", daemon=True
            )
            self._thread.start()
        while True:
            item = await self.queue.get()
            if item is None:
                return
            yield item

    async def close(self) -> None:
        """Stop the session and wait for its thread (bounded: a stuck driver is logged)."""
        self._stop.set()
        self.queue.close()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, JOIN_S)
            if thread.is_alive():
                log.error("camera %s: capture thread did not stop within %s s", self.camera, JOIN_S)

    # -- producer thread ---------------------------------------------------------------------
    def _session(self) -> bool:
        raise NotImplementedError

    def emit(self, item: EncodedPacket | LumaFrame, *, up: bool = True) -> None:
        """Queue what the camera produced (from any of the source's threads).

        ``up`` False for frames that do not prove the camera is back (an analysis
        sub-stream while the main stream is down).
        """
        if up:
            if self._up is not True:
                self._report(True, "receiving video")
            self._produced = True
        self.queue.put(item)

    def _report(self, up: bool, reason: str) -> None:
        """Queue a state change (only changes: a camera down for an hour is one item)."""
        with self._state_lock:
            if self._up is up:
                return
            self._up = up
        if up:
            log.info("camera %s: video up: %s", self.camera, reason)
        else:
            log.warning("camera %s: video lost: %s", self.camera, reason)
        self.queue.put(SourceState(self.camera, up, reason))

    def _run(self) -> None:
        try:
            self._reconnect_loop()
        except Exception as exc:  # a bug, not a camera problem: the consumer raises it
            log.exception("camera %s: capture thread failed", self.camera)
            self.queue.fail(exc)
            return
        self.queue.finish()

    def _reconnect_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._produced = False
            try:
                if self._session():
                    self._report(False, "end of stream")
                    return
                continue  # stopped
            except (SourceError, av.error.FFmpegError, OSError) as exc:
                self._report(False, str(exc) or type(exc).__name__)
            failures = 1 if self._produced else failures + 1
            low, high = self.backoff
            delay = random.uniform(low / 2, min(high, low * 2 ** min(failures - 1, 16)))
            log.debug("camera %s: reconnecting in %.2f s", self.camera, delay)
            self._stop.wait(delay)
