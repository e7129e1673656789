"""A camera's live fan-out (ViewerQueue, LiveFeed) and a viewer's track (PassthroughTrack).

Pure data-structure tests: packets carry small fake payloads, so what is checked is which
packets a viewer gets, in which order, with which catch-up flag and timestamps — not video.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from fractions import Fraction

import av
import pytest
from aiortc.mediastreams import MediaStreamError
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.video.frames import EncodedPacket
from edge.video.live.feed import VIEWER_QUEUE, FeedClosed, LiveFeed, ViewerQueue
from edge.video.live.track import (
    CATCHUP_TICKS,
    CLOCK,
    DEFAULT_STEP,
    MAX_JUMP_S,
    TIME_BASE,
    PassthroughTrack,
)

FPS = 15
CAMERA_TB = Fraction(1, FPS)


def pkt(
    n: int, key: bool = False, *, pts: int | None = None, tb: Fraction = CAMERA_TB
) -> EncodedPacket:
    """Packet ``n`` of a 15 fps camera; its payload names it, so bytes identify a packet."""
    data = (b"K" if key else b"P") + n.to_bytes(4, "big")
    return EncodedPacket("yard", data, n if pts is None else pts, tb, key)


def gop(first: int, length: int) -> list[EncodedPacket]:
    """A keyframe ``first`` followed by ``length - 1`` P-frames (nothing when length is 0)."""
    return [pkt(first + i, i == 0) for i in range(length)]


def drain(queue: ViewerQueue) -> list[tuple[EncodedPacket, bool]]:
    """Everything queued now, through the public get()."""

    async def run() -> list[tuple[EncodedPacket, bool]]:
        return [await queue.get() for _ in range(len(queue.packets))]

    return asyncio.run(run())


def numbers(items: Sequence[tuple[EncodedPacket, bool]]) -> list[int]:
    return [p.pts for p, _ in items]


# -- ViewerQueue / LiveFeed -------------------------------------------------------------------
def test_new_viewer_starts_with_the_latest_gop_as_catchup_then_live() -> None:
    feed = LiveFeed("yard")
    viewer = feed.attach(gop(30, 5))
    assert viewer.catchup == 5 and not viewer.waiting_key
    feed.push(pkt(35))
    got = drain(viewer)
    assert numbers(got) == [30, 31, 32, 33, 34, 35]
    assert [c for _, c in got] == [True] * 5 + [False], "only the backlog is catch-up"
    assert got[0][0].keyframe
    assert viewer.dropped == 0 and viewer.resyncs == 0


def test_gop_longer_than_the_queue_gives_its_keyframe_then_waits_for_the_next() -> None:
    viewer = ViewerQueue(gop(0, 12), maxlen=5)
    assert viewer.catchup == 1 and viewer.waiting_key
    viewer.put(pkt(12))  # P-frame of the same GOP: its references were never sent
    viewer.put(pkt(13))
    viewer.put(pkt(14, True))
    viewer.put(pkt(15))
    got = drain(viewer)
    assert numbers(got) == [0, 14, 15]
    assert [c for _, c in got] == [True, False, False]
    assert viewer.dropped == 2


def test_feed_attach_uses_the_default_queue_bound() -> None:
    feed = LiveFeed("yard")
    whole = feed.attach(gop(0, VIEWER_QUEUE))
    too_long = feed.attach(gop(0, VIEWER_QUEUE + 1))
    assert whole.catchup == VIEWER_QUEUE and not whole.waiting_key
    assert too_long.catchup == 1 and too_long.waiting_key


@pytest.mark.parametrize("backlog", [[], [pkt(3), pkt(4)]], ids=["empty", "no-keyframe-first"])
def test_viewer_without_a_usable_backlog_waits_for_a_keyframe(backlog: list[EncodedPacket]) -> None:
    feed = LiveFeed("yard")
    viewer = feed.attach(backlog)
    assert viewer.waiting_key and viewer.catchup == 0 and not viewer.packets
    feed.push(pkt(5))
    feed.push(pkt(6))
    feed.push(pkt(7, True))
    feed.push(pkt(8))
    got = drain(viewer)
    assert numbers(got) == [7, 8]
    assert not any(c for _, c in got)
    assert viewer.dropped == 2 and viewer.resyncs == 0


def test_overflow_drops_everything_and_resumes_at_the_next_keyframe() -> None:
    viewer = ViewerQueue([], maxlen=4)
    for p in gop(0, 4):
        viewer.put(p)
    assert len(viewer.packets) == 4
    viewer.put(pkt(4))  # no room: the 4 queued and this one go
    assert not viewer.packets and viewer.waiting_key
    assert viewer.dropped == 5 and viewer.resyncs == 1
    viewer.put(pkt(5))  # still no keyframe
    viewer.put(pkt(6, True))
    viewer.put(pkt(7))
    assert numbers(drain(viewer)) == [6, 7]
    assert viewer.dropped == 6 and viewer.resyncs == 1


def test_overflow_on_a_keyframe_resumes_at_that_keyframe() -> None:
    viewer = ViewerQueue(gop(0, 3), maxlen=3)  # catch-up fills the queue
    viewer.put(pkt(3, True))
    got = drain(viewer)
    assert numbers(got) == [3] and got[0][1] is False
    assert viewer.dropped == 3 and viewer.resyncs == 1 and not viewer.waiting_key


def test_a_waiting_get_is_woken_by_a_packet() -> None:
    async def run() -> tuple[EncodedPacket, bool]:
        feed = LiveFeed("yard")
        viewer = feed.attach([])
        task = asyncio.ensure_future(viewer.get())
        await asyncio.sleep(0.01)
        assert not task.done(), "get() must wait while nothing is queued"
        feed.push(pkt(9, True))
        return await asyncio.wait_for(task, 1.0)

    got, catchup = asyncio.run(run())
    assert got.pts == 9 and catchup is False


def test_detach_wakes_a_waiting_get_with_feed_closed() -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        viewer = feed.attach([])
        other = feed.attach([])
        task = asyncio.ensure_future(viewer.get())
        await asyncio.sleep(0.01)
        feed.detach(viewer)
        with pytest.raises(FeedClosed):
            await asyncio.wait_for(task, 1.0)
        assert feed.viewers == [other]
        feed.push(pkt(1, True))  # a detached viewer takes nothing more
        assert not viewer.packets and len(other.packets) == 1
        feed.detach(viewer)  # twice is harmless

    asyncio.run(run())


def test_feed_close_wakes_every_waiting_viewer() -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        viewers = [feed.attach([]) for _ in range(3)]
        tasks = [asyncio.ensure_future(v.get()) for v in viewers]
        await asyncio.sleep(0.01)
        feed.close()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1.0)
        assert all(isinstance(r, FeedClosed) for r in results), results
        assert feed.viewers == []

    asyncio.run(run())


def test_a_slow_viewer_does_not_affect_a_fast_one() -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        fast = feed.attach([])
        slow = feed.attach([])  # never reads
        received: list[int] = []
        for n in range(300):
            feed.push(pkt(n, n % 30 == 0))
            received.append((await fast.get())[0].pts)
        assert received == list(range(300)), "the fast viewer must get every packet in order"
        assert fast.dropped == 0 and fast.resyncs == 0
        assert feed.packets == 300
        assert slow.resyncs >= 1 and slow.dropped > 0
        assert len(slow.packets) <= VIEWER_QUEUE
        queued = [p for p, _ in slow.packets]
        assert queued[0].keyframe, "after a loss the slow viewer resumes on a keyframe"
        assert [p.pts for p in queued] == list(range(queued[0].pts, 300))

    asyncio.run(run())


OPS = st.lists(
    st.one_of(st.booleans(), st.just("drain")), min_size=1, max_size=120
)  # True/False: push a keyframe / P-frame; "drain": the viewer sends what it has


@settings(max_examples=150, deadline=None)
@given(backlog_len=st.integers(0, 10), maxlen=st.integers(1, 8), ops=OPS)
def test_property_delivered_stream_is_decodable_and_accounted(
    backlog_len: int, maxlen: int, ops: list[bool | str]
) -> None:
    """Whatever the pushes and drains: the queue stays bounded, every packet is delivered,
    queued or counted as dropped, and after any gap the next packet delivered is a keyframe."""
    backlog = gop(0, backlog_len)
    viewer = ViewerQueue(backlog, maxlen=maxlen)
    catchup = viewer.catchup
    pushed = list(backlog)
    delivered: list[EncodedPacket] = []
    n = 1000
    for op in ops:
        if op == "drain":
            delivered += [p for p, _ in drain(viewer)]
        else:
            p = pkt(n, bool(op))
            n += 1
            pushed.append(p)
            viewer.put(p)
        assert len(viewer.packets) <= maxlen
    delivered += [p for p, _ in drain(viewer)]
    assert catchup + len(pushed) - len(backlog) == len(delivered) + viewer.dropped
    index = {p.pts: i for i, p in enumerate(pushed)}
    for before, after in itertools.pairwise(delivered):
        if index[after.pts] != index[before.pts] + 1:
            assert after.keyframe, f"packet {after.pts} follows a gap but is not a keyframe"
    if delivered:
        assert delivered[0].keyframe


# -- PassthroughTrack -------------------------------------------------------------------------
async def recv_n(track: PassthroughTrack, n: int) -> list[av.Packet]:
    return [await asyncio.wait_for(track.recv(), 1.0) for _ in range(n)]


def test_track_sends_the_camera_bytes_catchup_fast_then_camera_spacing() -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        backlog = gop(0, 4)
        track = PassthroughTrack(feed, lambda: backlog)
        assert feed.viewers == [], "the track attaches only when the first packet is wanted"
        first = await recv_n(track, 1)
        assert len(feed.viewers) == 1
        feed.push(pkt(4))
        feed.push(pkt(5))
        feed.push(pkt(6, True))
        out = first + await recv_n(track, 6)
        sent = [*backlog, pkt(4), pkt(5), pkt(6, True)]
        assert [bytes(p) for p in out] == [p.data for p in sent]
        assert all(p.time_base == TIME_BASE == Fraction(1, 90_000) for p in out)
        assert out[0].is_keyframe and track.first_keyframe is True
        assert [p.is_keyframe for p in out] == [p.keyframe for p in sent]
        step = CLOCK // FPS
        assert step == 6000
        c = CATCHUP_TICKS
        assert [p.pts for p in out] == [
            0,
            c,
            2 * c,
            3 * c,
            3 * c + step,
            3 * c + 2 * step,
            3 * c + 3 * step,
        ]
        assert all(p.dts == p.pts for p in out)
        assert track.stats() == {
            "frames": 7,
            "keyframes": 2,
            "catchup": 4,
            "dropped": 0,
            "resyncs": 0,
        }
        track.stop()

    asyncio.run(run())


def test_track_keeps_the_spacing_of_a_90khz_camera() -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        track = PassthroughTrack(feed, list)
        task = asyncio.ensure_future(recv_n(track, 3))
        await asyncio.sleep(0.01)
        tb = Fraction(1, 90_000)
        for n, ticks in enumerate((1_000_000, 1_006_000, 1_015_000)):
            feed.push(pkt(n, n == 0, pts=ticks, tb=tb))
        out = await task
        assert [p.pts for p in out] == [0, 6000, 15000]
        assert track.catchup_sent == 0
        track.stop()

    asyncio.run(run())


@pytest.mark.parametrize(
    "jump_s", [MAX_JUMP_S + 1.0, 3600.0, -2.0, 0.0], ids=["restart", "hour", "back", "same"]
)
def test_track_rebases_a_timestamp_jump_by_the_default_step(jump_s: float) -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        track = PassthroughTrack(feed, list)
        task = asyncio.ensure_future(recv_n(track, 4))
        await asyncio.sleep(0.01)
        tb = Fraction(1, 90_000)
        t0 = 10 * CLOCK
        jumped = t0 + 6000 + round(jump_s * CLOCK)
        for n, ticks in enumerate((t0, t0 + 6000, jumped, jumped + 3000)):
            feed.push(pkt(n, n in (0, 2), pts=ticks, tb=tb))
        out = await task
        assert [p.pts for p in out] == [0, 6000, 6000 + DEFAULT_STEP, 9000 + DEFAULT_STEP]
        track.stop()

    asyncio.run(run())


def test_track_takes_a_jump_up_to_max_jump_as_real_spacing() -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        track = PassthroughTrack(feed, list)
        task = asyncio.ensure_future(recv_n(track, 2))
        await asyncio.sleep(0.01)
        tb = Fraction(1, 90_000)
        feed.push(pkt(0, True, pts=0, tb=tb))
        feed.push(pkt(1, pts=round(MAX_JUMP_S * CLOCK), tb=tb))
        out = await task
        assert out[1].pts == round(MAX_JUMP_S * CLOCK)
        track.stop()

    asyncio.run(run())


def test_track_stop_detaches_and_recv_then_fails() -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        track = PassthroughTrack(feed, lambda: gop(0, 2))
        await recv_n(track, 1)
        viewer = track.queue
        assert viewer is not None and feed.viewers == [viewer]
        track.stop()
        assert feed.viewers == [] and viewer.closed
        assert track.readyState == "ended"
        with pytest.raises(MediaStreamError):
            await track.recv()

    asyncio.run(run())


def test_track_ends_when_its_feed_closes_under_a_waiting_recv() -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        track = PassthroughTrack(feed, list)
        task = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0.01)
        feed.close()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(task, 1.0)
        assert track.readyState == "ended"

    asyncio.run(run())


def test_track_stats_count_drops_of_its_queue() -> None:
    async def run() -> None:
        feed = LiveFeed("yard")
        track = PassthroughTrack(feed, list)
        assert track.stats() == {
            "frames": 0,
            "keyframes": 0,
            "catchup": 0,
            "dropped": 0,
            "resyncs": 0,
        }
        task = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0.01)
        feed.push(pkt(0, True))
        await asyncio.wait_for(task, 1.0)
        for n in range(1, VIEWER_QUEUE + 2):  # one more than fits: overflow, wait for a key
            feed.push(pkt(n))
        stats = track.stats()
        assert stats["frames"] == 1 and stats["keyframes"] == 1
        assert stats["resyncs"] == 1 and stats["dropped"] == VIEWER_QUEUE + 1
        track.stop()

    asyncio.run(run())


def test_truncated_catchup_times_the_next_keyframe_from_the_join_not_the_old_keyframe() -> None:
    """A GOP longer than the queue: only its keyframe is sent, and the next keyframe must be
    stamped by the real time since the newest packet held at the join, or every later frame
    would play late by the part of the GOP that was skipped."""

    async def run() -> None:
        feed = LiveFeed("yard")
        held = gop(0, VIEWER_QUEUE + 10)  # 100 packets held: more than the queue takes
        track = PassthroughTrack(feed, lambda: held)
        out = await recv_n(track, 1)
        assert out[0].is_keyframe and track.catchup_sent == 1
        after = len(held) + 5  # the next keyframe, 5 frames after the newest packet held
        for n in range(len(held), after):
            feed.push(pkt(n))  # dropped: the viewer waits for the next keyframe
        feed.push(pkt(after, True))
        out += await recv_n(track, 1)
        assert out[1].is_keyframe
        assert out[1].pts == (after - (len(held) - 1)) * (CLOCK // FPS), (
            "the next keyframe must be timed from the newest packet held at the join"
        )
        track.stop()

    asyncio.run(run())
