"""A live viewer's video track: the camera's own H.264 access units as ``av.Packet``s.

aiortc packetises an ``av.Packet`` returned by ``recv()`` as it is (RFC 6184), so nothing is
decoded or re-encoded on the box: the CPU cost per viewer is copying bytes into RTP.

Timestamps are rewritten onto the viewer's own 90 kHz timeline:

- catch-up packets (the ring's latest GOP, sent at once when the viewer joins) are spaced by
  CATCHUP_TICKS, so the receiver decodes them immediately instead of replaying up to a GOP of
  old video at its original pace: the picture is live a few milliseconds after the keyframe;
- live packets keep the camera's spacing, offset after the catch-up;
- a camera whose timestamps jump (reconnect, restart) is rebased instead of making the
  receiver wait for, or drop, frames stamped far away.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from edge.video.frames import EncodedPacket
from edge.video.live.feed import FeedClosed, LiveFeed, ViewerQueue

CLOCK = 90_000
TIME_BASE = Fraction(1, CLOCK)
CATCHUP_TICKS = 90  # 1 ms between catch-up frames
DEFAULT_STEP = CLOCK // 15
MAX_JUMP_S = 5.0


class PassthroughTrack(MediaStreamTrack):
    """Video of one camera for one viewer, detached from the feed when stopped."""

    kind = "video"

    def __init__(self, feed: LiveFeed, backlog: Callable[[], list[EncodedPacket]]) -> None:
        super().__init__()
        self.feed = feed
        self.backlog = backlog
        self.queue: ViewerQueue | None = None  # attached when the first packet is wanted
        self.sent = 0
        self.keyframes = 0
        self.catchup_sent = 0
        self.first_keyframe: bool | None = None
        self._out = 0  # last timestamp sent, 90 kHz
        self._last_in: float | None = None  # stream seconds of the last packet sent
        self._catching_up = True

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.queue is None:  # the link is up: start on the freshest keyframe
            self.queue = self.feed.attach(self.backlog())
        try:
            pkt, catchup = await self.queue.get()
        except FeedClosed:
            self.stop()
            raise MediaStreamError from None
        out = av.Packet(pkt.data)
        out.pts = out.dts = self._stamp(pkt, catchup)
        out.time_base = TIME_BASE
        out.is_keyframe = pkt.keyframe
        if self.first_keyframe is None:
            self.first_keyframe = pkt.keyframe
        self.sent += 1
        self.keyframes += int(pkt.keyframe)
        self.catchup_sent += int(catchup)
        return out

    def _stamp(self, pkt: EncodedPacket, catchup: bool) -> int:
        if self.sent == 0:
            self._out = 0
        elif catchup:
            self._out += CATCHUP_TICKS
        else:
            if self._catching_up and self.queue is not None and self.queue.joined_at_s is not None:
                # the first live packet: time it from the newest packet held at the join
                self._last_in = max(self._last_in or 0.0, self.queue.joined_at_s)
            delta = pkt.seconds - self._last_in if self._last_in is not None else 0.0
            self._out += round(delta * CLOCK) if 0 < delta <= MAX_JUMP_S else DEFAULT_STEP
        self._catching_up = catchup
        self._last_in = pkt.seconds
        return self._out

    def stop(self) -> None:
        if self.queue is not None:
            self.feed.detach(self.queue)
        super().stop()

    def stats(self) -> dict[str, int]:
        return {
            "frames": self.sent,
            "keyframes": self.keyframes,
            "catchup": self.catchup_sent,
            "dropped": self.queue.dropped if self.queue else 0,
            "resyncs": self.queue.resyncs if self.queue else 0,
        }
