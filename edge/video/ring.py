"""The pre-alarm ring buffer of one camera: the last seconds of encoded video, in memory.

Why whole GOPs: a clip can only start on a keyframe (the packets after it are differences
against it), so the ring keeps and drops packets a group of pictures (GOP: one keyframe and the
frames that follow it) at a time. It always keeps enough to start a clip at the last keyframe at
or before ``newest - pre_s``, so an alarm gets at least ``pre_s`` seconds of video before it,
at most one GOP more.

Why pure: no clock, no I/O, no logging. Time is the packets' own presentation time, so the
ring is fully described by what was pushed, and property tests can drive it packet by packet.

Bounds: duration (about ``pre_s`` plus one GOP) and bytes (``max_bytes``). When one GOP alone
exceeds ``max_bytes`` the ring keeps only the newest GOP; when that GOP grows past twice the
bound (a camera that stopped sending keyframes) the ring empties and waits for the next
keyframe, so memory stays bounded whatever the camera does.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

from edge.video.frames import EncodedPacket

MAX_PRE_S = 60.0  # the configuration allows at most one minute of pre-alarm video


class _Gop:
    """One keyframe and the packets that follow it until the next keyframe."""

    __slots__ = ("bytes", "packets", "start_s")

    def __init__(self, keyframe: EncodedPacket) -> None:
        self.packets: list[EncodedPacket] = [keyframe]
        self.start_s = keyframe.seconds
        self.bytes = len(keyframe.data)

    def add(self, pkt: EncodedPacket) -> None:
        self.packets.append(pkt)
        self.bytes += len(pkt.data)


class PacketRing:
    """Keyframe-aligned packets of one camera, bounded by duration and by bytes."""

    def __init__(self, pre_s: float, max_bytes: int) -> None:
        if not 0.0 <= pre_s <= MAX_PRE_S:
            raise ValueError(f"pre_s must be between 0 and {MAX_PRE_S:g} seconds (got {pre_s})")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 (got {max_bytes})")
        self.pre_s = pre_s
        self.max_bytes = max_bytes
        self._gops: collections.deque[_Gop] = collections.deque()
        self._bytes = 0
        self._count = 0
        self._newest_s = 0.0
        self.skipped = 0  # packets dropped because no keyframe preceded them
        self.overflows = 0  # times a single GOP outgrew twice max_bytes and was dropped

    # -- feeding -------------------------------------------------------------------------------
    def push(self, pkt: EncodedPacket) -> None:
        """Add the newest packet (decode order), then drop what no clip can need any more."""
        if pkt.keyframe:
            if self._gops and pkt.seconds < self._gops[-1].start_s:
                self.clear()  # time went backwards: camera restarted, older video is unusable
            self._gops.append(_Gop(pkt))
        elif self._gops:
            self._gops[-1].add(pkt)
        else:
            self.skipped += 1
            return
        self._bytes += len(pkt.data)
        self._count += 1
        self._newest_s = max(self._newest_s, pkt.seconds)
        self._evict()

    def _evict(self) -> None:
        horizon = self._newest_s - self.pre_s
        while len(self._gops) > 1 and self._gops[1].start_s <= horizon:
            self._drop_oldest()
        while len(self._gops) > 1 and self._bytes > self.max_bytes:
            self._drop_oldest()
        if self._bytes > 2 * self.max_bytes:  # one endless GOP: never hold it unbounded
            self.overflows += 1
            self.clear()

    def _drop_oldest(self) -> None:
        gop = self._gops.popleft()
        self._bytes -= gop.bytes
        self._count -= len(gop.packets)

    def clear(self) -> None:
        """Forget everything (a stream discontinuity); the next keyframe starts afresh."""
        self._gops.clear()
        self._bytes = 0
        self._count = 0
        self._newest_s = 0.0

    # -- reading -------------------------------------------------------------------------------
    def since(self, t_s: float) -> list[EncodedPacket]:
        """Packets from the last keyframe at or before ``t_s`` (else the oldest) to the newest."""
        start = 0
        for i, gop in enumerate(self._gops):
            if gop.start_s <= t_s:
                start = i
            else:
                break
        return [p for gop in list(self._gops)[start:] for p in gop.packets]

    def held_before(self, t_s: float, want_s: float) -> float:
        """Seconds before ``t_s`` that a clip asking for ``want_s`` of them gets from the ring
        (what :meth:`since` would start it on): less than ``want_s`` when the ring does not
        reach back that far (a camera that has just started, a stream that restarted), 0 when
        it holds nothing from before ``t_s``."""
        times = self.keyframe_times()
        if not times:
            return 0.0
        start = times[0]
        for s in times:
            if s > t_s - want_s:
                break
            start = s
        return max(0.0, t_s - start)

    def latest_keyframe_gop(self) -> list[EncodedPacket]:
        """From the newest keyframe to the newest packet: what a live viewer can start on."""
        return list(self._gops[-1].packets) if self._gops else []

    def keyframe_times(self) -> list[float]:
        """Start time of every GOP held, oldest first (for diagnostics and tests)."""
        return [gop.start_s for gop in self._gops]

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def duration_s(self) -> float:
        """From the oldest keyframe held to the newest packet."""
        return self._newest_s - self._gops[0].start_s if self._gops else 0.0

    @property
    def gop_count(self) -> int:
        return len(self._gops)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[EncodedPacket]:
        for gop in list(self._gops):
            yield from gop.packets
