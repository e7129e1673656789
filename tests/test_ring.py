"""PacketRing: the pre-alarm buffer keeps exactly what a clip needs, within its bounds.

Properties are checked packet by packet over random GOP structures, frame rates, packet
sizes, pre-alarm lengths, byte bounds and alarm times.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.video.frames import EncodedPacket
from edge.video.ring import PacketRing

TB = Fraction(1, 90_000)
EPS = 1e-9


def make_stream(gops: list[list[int]], fps: int, start_pts: int = 0) -> list[EncodedPacket]:
    """Packets for GOPs given as lists of packet sizes (the first of each is the keyframe)."""
    step = 90_000 // fps
    out: list[EncodedPacket] = []
    for sizes in gops:
        for j, size in enumerate(sizes):
            pts = start_pts + len(out) * step
            out.append(EncodedPacket("c", bytes(size), pts, TB, keyframe=j == 0))
    return out


gop_st = st.lists(st.integers(1, 20_000), min_size=1, max_size=25)
stream_st = st.tuples(
    st.lists(gop_st, min_size=1, max_size=12),
    st.sampled_from([1, 2, 5, 10, 15, 25, 30]),
)
pre_st = st.floats(0.0, 20.0, allow_nan=False)


def longest_gop_s(gops: list[list[int]], fps: int) -> float:
    return max(len(g) for g in gops) / fps


def check_invariants(ring: PacketRing, pushed: list[EncodedPacket], longest_s: float) -> None:
    held = list(ring)
    assert len(held) == len(ring)
    assert ring.bytes == sum(len(p.data) for p in held)
    if not held:
        return
    assert held[0].keyframe, "the ring must always start on a keyframe"
    assert held[-1] is pushed[-1], "the newest packet is always held"
    assert held == pushed[len(pushed) - len(held) :], "the ring holds a contiguous suffix"
    assert ring.bytes <= ring.max_bytes or ring.gop_count == 1
    assert ring.bytes <= 2 * ring.max_bytes
    newest = pushed[-1].seconds
    starts = ring.keyframe_times()
    if len(starts) > 1:  # nothing older than one keyframe before the horizon is kept
        assert starts[1] > newest - ring.pre_s
    assert ring.duration_s <= ring.pre_s + longest_s + EPS


@settings(max_examples=150, deadline=None)
@given(stream_st, pre_st, st.integers(1_000, 400_000))
def test_bounds_hold_after_every_push(
    stream: tuple[list[list[int]], int], pre_s: float, max_bytes: int
) -> None:
    gops, fps = stream
    ring = PacketRing(pre_s, max_bytes)
    pushed: list[EncodedPacket] = []
    for pkt in make_stream(gops, fps):
        ring.push(pkt)
        pushed.append(pkt)
        check_invariants(ring, pushed, longest_gop_s(gops, fps))


@settings(max_examples=200, deadline=None)
@given(stream_st, pre_st, st.data())
def test_clip_starts_at_last_keyframe_before_alarm_minus_pre(
    stream: tuple[list[list[int]], int], pre_s: float, data: st.DataObject
) -> None:
    """Without a byte bound in the way, the clip starts exactly where the contract says."""
    gops, fps = stream
    packets = make_stream(gops, fps)
    alarm_at = data.draw(st.integers(0, len(packets) - 1), label="alarm packet")
    late = data.draw(st.floats(0.0, 1.0 / fps, exclude_max=True), label="alarm after it (s)")
    ring = PacketRing(pre_s, max_bytes=10**12)
    for pkt in packets[: alarm_at + 1]:
        ring.push(pkt)
    target = packets[alarm_at].seconds + late - pre_s
    clip = ring.since(target)
    keyframes = [p.seconds for p in packets[: alarm_at + 1] if p.keyframe]
    expected = max((k for k in keyframes if k <= target), default=keyframes[0])
    assert clip[0].keyframe
    assert clip[0].seconds == expected
    assert clip[-1] is packets[alarm_at]
    if keyframes[0] <= target:  # the stream reaches back far enough
        assert clip[0].seconds <= target
        assert not any(clip[0].seconds < k <= target for k in keyframes), "one GOP too early"


@settings(max_examples=150, deadline=None)
@given(stream_st, pre_st, st.integers(1_000, 200_000), st.data())
def test_clip_under_byte_bound_is_keyframe_aligned_and_never_too_early(
    stream: tuple[list[list[int]], int], pre_s: float, max_bytes: int, data: st.DataObject
) -> None:
    gops, fps = stream
    packets = make_stream(gops, fps)
    alarm_at = data.draw(st.integers(0, len(packets) - 1), label="alarm packet")
    ring = PacketRing(pre_s, max_bytes)
    for pkt in packets[: alarm_at + 1]:
        ring.push(pkt)
    target = packets[alarm_at].seconds - pre_s
    clip = ring.since(target)
    if not clip:  # one GOP outgrew twice the bound: dropped until the next keyframe
        assert ring.overflows > 0 and len(ring) == 0
        return
    assert clip[0].keyframe
    keyframes = [p.seconds for p in packets[: alarm_at + 1] if p.keyframe]
    if clip[0].seconds <= target:  # the ring held that far back: start on the last keyframe
        assert not any(clip[0].seconds < k <= target for k in keyframes)
    else:  # the byte bound cut the pre-alarm short: the clip starts at the oldest GOP held
        assert clip[0].seconds == ring.keyframe_times()[0]


def test_leading_packets_without_keyframe_are_skipped() -> None:
    packets = make_stream([[10, 10, 10]], fps=10)
    orphans = [EncodedPacket("c", b"x", p.pts, TB, False) for p in packets]
    ring = PacketRing(5.0, 10_000)
    for pkt in orphans:
        ring.push(pkt)
    assert len(ring) == 0 and ring.skipped == 3
    assert ring.since(0.0) == [] and ring.latest_keyframe_gop() == []


def test_latest_keyframe_gop_starts_at_newest_keyframe() -> None:
    packets = make_stream([[50, 5, 5], [50, 5], [50, 5, 5, 5]], fps=10)
    ring = PacketRing(60.0, 10_000)
    for pkt in packets:
        ring.push(pkt)
    assert ring.latest_keyframe_gop() == packets[5:]
    assert len(ring) == len(packets) and ring.bytes == 180
    assert ring.duration_s == pytest.approx(0.8)


def test_single_gop_larger_than_bound_keeps_only_newest_then_overflows() -> None:
    ring = PacketRing(10.0, max_bytes=1_000)
    for pkt in make_stream([[400, 400], [600, 600]], fps=10):
        ring.push(pkt)
    assert ring.gop_count == 1 and ring.bytes == 1_200  # newest GOP only, over the bound
    for pkt in make_stream([[600] * 3], fps=10, start_pts=4 * 9_000)[1:]:
        ring.push(pkt)  # the same GOP keeps growing: past twice the bound it is dropped
    assert ring.overflows == 1 and len(ring) == 0
    ring.push(make_stream([[7]], fps=10, start_pts=90_000)[0])
    assert len(ring) == 1 and ring.bytes == 7


def test_time_going_backwards_restarts_the_ring() -> None:
    ring = PacketRing(10.0, 100_000)
    for pkt in make_stream([[10, 10], [10, 10]], fps=10, start_pts=900_000):
        ring.push(pkt)
    restart = make_stream([[20, 20]], fps=10)
    for pkt in restart:
        ring.push(pkt)
    assert list(ring) == restart
    assert ring.duration_s == pytest.approx(0.1)


@pytest.mark.parametrize("pre_s", [-1.0, 60.5])
def test_pre_alarm_outside_limits_is_refused(pre_s: float) -> None:
    with pytest.raises(ValueError, match="pre_s"):
        PacketRing(pre_s, 1_000)
