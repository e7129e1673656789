"""One camera's packets fanned out to its live viewers: one capture, many viewers.

The camera pipeline pushes every encoded packet here (in the event loop, right after the
ring); each viewer has its own bounded queue so that a slow viewer never slows the camera or
the other viewers. A viewer that falls behind by a whole queue loses what it has not sent and
resumes at the next keyframe (a decoder cannot use P-frames whose reference it never got).

A new viewer starts on the ring's latest keyframe and the packets after it — "instant start":
its first packet is decodable at once whatever the GOP length. Those backlog packets are
marked ``catchup`` so that the track can send them without waiting for their original timing.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

from edge.errors import EdgeError
from edge.video.frames import EncodedPacket

VIEWER_QUEUE = 90  # packets: 6 s at 15 fps; beyond that a viewer is hopelessly behind


class FeedClosed(EdgeError):
    """The viewer was detached (session closed, camera gone)."""


class ViewerQueue:
    """The packets one viewer has yet to send, bounded, keyframe-aligned after any loss."""

    def __init__(self, backlog: Sequence[EncodedPacket], maxlen: int = VIEWER_QUEUE) -> None:
        self.maxlen = maxlen
        start = list(backlog) if backlog and backlog[0].keyframe else []
        # Stream time of the newest packet held when the viewer joined, even if not sent:
        # live packets are timed from it, so a truncated catch-up adds no delay.
        self.joined_at_s: float | None = start[-1].seconds if start else None
        # A GOP longer than the queue: show its keyframe at once, continue at the next one.
        whole = len(start) <= maxlen
        start = start if whole else start[:1]
        self.packets: collections.deque[tuple[EncodedPacket, bool]] = collections.deque(
            (p, True) for p in start
        )
        self.catchup = len(start)
        self.waiting_key = not start or not whole
        self.dropped = 0
        self.resyncs = 0
        self.closed = False
        self._wake = asyncio.Event()
        if start:
            self._wake.set()

    def put(self, pkt: EncodedPacket) -> None:
        if self.closed:
            return
        if self.waiting_key:
            if not pkt.keyframe:
                self.dropped += 1
                return
            self.waiting_key = False
        if len(self.packets) >= self.maxlen:
            self.dropped += len(self.packets)
            self.packets.clear()
            self.resyncs += 1
            if not pkt.keyframe:
                self.waiting_key = True
                self.dropped += 1
                return
        self.packets.append((pkt, False))
        self._wake.set()

    async def get(self) -> tuple[EncodedPacket, bool]:
        """The next packet and whether it is catch-up backlog; FeedClosed once detached."""
        while not self.packets:
            if self.closed:
                raise FeedClosed("the live viewer was detached")
            self._wake.clear()
            await self._wake.wait()
        return self.packets.popleft()

    def close(self) -> None:
        self.closed = True
        self._wake.set()


class LiveFeed:
    """The viewers of one camera."""

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self.viewers: list[ViewerQueue] = []
        self.packets = 0

    def attach(self, backlog: Sequence[EncodedPacket]) -> ViewerQueue:
        """A new viewer starting on ``backlog`` (the ring's latest keyframe GOP)."""
        viewer = ViewerQueue(backlog)
        self.viewers.append(viewer)
        return viewer

    def detach(self, viewer: ViewerQueue) -> None:
        viewer.close()
        if viewer in self.viewers:
            self.viewers.remove(viewer)

    def push(self, pkt: EncodedPacket) -> None:
        self.packets += 1
        for viewer in self.viewers:
            viewer.put(pkt)

    def close(self) -> None:
        for viewer in list(self.viewers):
            self.detach(viewer)
