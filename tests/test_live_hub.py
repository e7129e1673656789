"""The live hub: grants, viewer caps, refusals, audit reports, the reaper, and a real viewer.

The hub runs with real feeds and a real site configuration; its reports are collected as
edge-video would publish them. The last tests connect an in-process aiortc viewer to a
synthetic camera (320x240, libx264) through ``hub.offer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.viewer import Viewer, recording_decoders

from edge.config import SiteConfig
from edge.journal_schema import parse_iso
from edge.video.frames import EncodedPacket, nal_units
from edge.video.live.api import LiveRefused
from edge.video.live.feed import LiveFeed
from edge.video.live.hub import HUNG_UP, REPLACED, LiveHub
from edge.video.live.session import LiveSession
from edge.video.ring import PacketRing
from edge.video.sources.synthetic import SyntheticSource

SITE = "site-a"
CAMERAS = [
    {
        "id": "yard",
        "name": "Yard",
        "source": "synthetic",
        "url": "walker",
        "width": 320,
        "height": 240,
        "fps": 15,
        "gop_s": 1.0,
    },
    {"id": "door", "source": "synthetic", "url": "walker", "width": 320, "height": 240},
]


def site_config(**live: Any) -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": SITE},
            "video": {"cameras": CAMERAS},
            "live": {"viewers_per_camera": 2, **live},
        }
    )


class Box:
    """A hub over real feeds, with the camera states and the reports edge-video would see."""

    def __init__(self, cfg: SiteConfig | None = None, backlog: Any = None) -> None:
        self.cfg = cfg or site_config()
        self.feeds = {c.id: LiveFeed(c.id) for c in self.cfg.video.cameras}
        self.up: dict[str, bool | None] = {c.id: True for c in self.cfg.video.cameras}
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.ended: list[tuple[str, str]] = []
        self.hub = LiveHub(
            self.cfg,
            self.feeds,
            backlog or (lambda camera: []),
            self.up.get,
            lambda camera, body: self.reports.append((camera, body)),
        )
        self.hub.on_end = self._on_end

    async def _on_end(self, session: str, why: str) -> None:
        self.ended.append((session, why))

    def grant(self, session: str, camera: str = "yard", via: Any = "central") -> LiveSession:
        return self.hub.grant(
            session=session, camera=camera, operator="op-7", reason="alarm zone 3", via=via
        )

    def events(self, event: str) -> list[dict[str, Any]]:
        return [body for _, body in self.reports if body["event"] == event]


def refused(call: Any) -> LiveRefused:
    with pytest.raises(LiveRefused) as info:
        call()
    return info.value


# -- grants -----------------------------------------------------------------------------------
def test_grant_reports_started_with_who_what_why_and_how() -> None:
    async def run() -> None:
        box = Box()
        before = time.time()
        live = box.hub.grant(
            session="s1", camera="yard", operator="op-7", reason="alarm zone 3", via="central"
        )
        assert live.grant.camera == "yard" and live.servers == []
        ((camera, body),) = box.reports
        assert camera == "yard"
        assert {k: body[k] for k in ("v", "event", "session", "camera", "operator")} == {
            "v": 1,
            "event": "started",
            "session": "s1",
            "camera": "yard",
            "operator": "op-7",
        }
        assert body["reason"] == "alarm zone 3" and body["via"] == "central"
        assert body["remote"] == ""
        assert parse_iso(body["start"]).timestamp() == pytest.approx(before, abs=1.0)
        assert box.hub.session_camera("s1") == "yard"
        assert box.hub.session_camera("nope") is None
        await box.hub.close_all("test over")

    asyncio.run(run())


def test_describe_lists_cameras_viewers_caps_and_outputs() -> None:
    async def run() -> None:
        box = Box()
        box.up["door"] = None  # not known yet
        box.grant("s1")
        assert box.hub.describe() == {
            "site": SITE,
            "cameras": [
                {"id": "yard", "name": "Yard", "up": True, "viewers": 1, "cap": 2},
                {"id": "door", "name": "door", "up": None, "viewers": 0, "cap": 2},
            ],
            "outputs": [],
        }
        assert box.hub.status() == {"yard": 1, "door": 0}
        await box.hub.close_all("test over")

    asyncio.run(run())


def test_viewer_cap_per_camera_names_the_setting_and_frees_on_close() -> None:
    async def run() -> None:
        box = Box()
        box.grant("s1")
        box.grant("s2")
        exc = refused(lambda: box.grant("s3"))
        assert exc.code == "viewer_cap"
        assert "live.viewers_per_camera = 2" in exc.reason and "'yard'" in exc.reason
        assert "s3" not in box.hub.sessions
        box.grant("d1", camera="door")  # the cap is per camera
        assert await box.hub.close("s1", HUNG_UP)
        box.grant("s3")
        assert box.hub.viewers("yard") == 2
        assert box.events("refused") == [], "a grant refusal is reported by its caller"
        await box.hub.close_all("test over")

    asyncio.run(run())


def test_unknown_camera_is_refused_naming_the_known_ones() -> None:
    box = Box()
    exc = refused(lambda: box.grant("s1", camera="gate"))
    assert exc.code == "unknown_camera"
    assert "'gate'" in exc.reason and "door, yard" in exc.reason
    assert box.reports == [] and box.hub.sessions == {}


def test_disabled_live_view_is_refused() -> None:
    box = Box(site_config(enabled=False))
    exc = refused(lambda: box.grant("s1"))
    assert exc.code == "disabled" and "live.enabled" in exc.reason
    assert box.reports == []


def test_camera_without_video_is_refused_but_unknown_state_is_not() -> None:
    async def run() -> None:
        box = Box()
        box.up["yard"] = False
        exc = refused(lambda: box.grant("s1"))
        assert exc.code == "unknown_camera" and "no video right now" in exc.reason
        box.up["yard"] = None  # edge-video has not heard from the camera yet
        box.grant("s1")
        await box.hub.close_all("test over")

    asyncio.run(run())


def test_duplicate_session_id_is_refused_and_the_first_kept() -> None:
    async def run() -> None:
        box = Box()
        first = box.grant("s1")
        exc = refused(lambda: box.grant("s1", camera="door"))
        assert exc.code == "bad_offer" and "s1" in exc.reason
        assert box.hub.sessions["s1"] is first and box.hub.session_camera("s1") == "yard"
        assert len(box.events("started")) == 1
        await box.hub.close_all("test over")

    asyncio.run(run())


# -- ends -------------------------------------------------------------------------------------
def test_close_reports_ended_with_times_reason_and_connection() -> None:
    async def run() -> None:
        box = Box()
        box.grant("s1")
        await asyncio.sleep(0.2)
        assert await box.hub.close("s1", HUNG_UP) is True
        (ended,) = box.events("ended")
        assert ended["session"] == "s1" and ended["camera"] == "yard"
        assert ended["operator"] == "op-7" and ended["via"] == "central"
        assert ended["why"] == HUNG_UP and ended["connected"] is False
        assert ended["frames"] == 0
        start, end = parse_iso(ended["start"]), parse_iso(ended["end"])
        assert ended["start"] == box.events("started")[0]["start"]
        assert 0.1 <= (end - start).total_seconds() < 2.0
        assert ended["duration_s"] == pytest.approx((end - start).total_seconds(), abs=0.1)
        assert await box.hub.close("s1", HUNG_UP) is False, "closed once only"
        assert await box.hub.close("never", HUNG_UP) is False
        assert len(box.events("ended")) == 1
        assert box.ended == [], "the viewer hung up: nothing to tell it"

    asyncio.run(run())


def test_on_end_is_told_only_of_central_sessions_the_box_ended() -> None:
    async def run() -> None:
        box = Box()
        box.grant("c1")
        box.grant("c2")
        box.grant("l1", camera="door", via="lan")
        await box.hub.close("c1", HUNG_UP)
        await box.hub.close_all("edge-video stopped")
        assert box.ended == [("c2", "edge-video stopped")]
        assert {b["session"]: b["why"] for b in box.events("ended")} == {
            "c1": HUNG_UP,
            "c2": "edge-video stopped",
            "l1": "edge-video stopped",
        }

    asyncio.run(run())


# -- LAN (WHEP) -------------------------------------------------------------------------------
def test_the_central_station_always_gets_a_slot_lan_viewers_make_room() -> None:
    async def run() -> None:
        box = Box(site_config(viewers_per_camera=2))
        box.grant("lan-old", via="lan")
        box.grant("lan-new", via="lan")
        box.hub.sessions["lan-old"].connected_once = True
        box.hub.sessions["lan-new"].connected_once = True
        box.grant("c1")  # full of LAN viewers: the most recent one makes room
        assert set(box.hub.sessions) == {"lan-old", "c1"}
        box.grant("c2")
        assert set(box.hub.sessions) == {"c1", "c2"}
        await asyncio.sleep(0)  # the ends run as tasks
        await box.hub.close_all("test over")
        ended = {b["session"]: b["why"] for _, b in box.reports if b["event"] == "ended"}
        assert ended["lan-new"] == ended["lan-old"] == REPLACED
        # Central sessions compete only with each other: the cap holds for them.
        full = Box(site_config(viewers_per_camera=1))
        full.grant("c1")
        assert refused(lambda: full.grant("c2")).code == "viewer_cap"
        with pytest.raises(LiveRefused) as info:
            await full.hub.open_lan("yard", "v=0", user="alice", remote="192.0.2.7")
        assert info.value.code == "viewer_cap"  # a LAN viewer never ends a central session
        assert set(full.hub.sessions) == {"c1"}
        await full.hub.close_all("test over")

    asyncio.run(run())


def test_open_lan_refusals_are_reported_as_refused() -> None:
    async def run() -> None:
        box = Box(site_config(viewers_per_camera=1))
        with pytest.raises(LiveRefused) as info:
            await box.hub.open_lan("gate", "v=0", user="alice", remote="192.0.2.7")
        assert info.value.code == "unknown_camera"
        box.grant("s1")
        with pytest.raises(LiveRefused) as info:
            await box.hub.open_lan("yard", "v=0", user="alice", remote="192.0.2.7")
        assert info.value.code == "viewer_cap"
        refusals = [(camera, body) for camera, body in box.reports if body["event"] == "refused"]
        assert [(c, b["code"]) for c, b in refusals] == [
            ("_", "unknown_camera"),  # no such camera: reported apart from the cameras
            ("yard", "viewer_cap"),
        ]
        for _, body in refusals:
            assert body["operator"] == "lan:alice" and body["via"] == "lan"
            assert body["remote"] == "192.0.2.7" and body["v"] == 1
            assert body["reason"] and parse_iso(body["ts"])
        assert box.hub.sessions.keys() == {"s1"}
        await box.hub.close_all("test over")

    asyncio.run(run())


def test_unusable_lan_offer_frees_its_slot_and_is_audited() -> None:
    async def run() -> None:
        box = Box(site_config(viewers_per_camera=1))
        with pytest.raises(LiveRefused) as info:
            await box.hub.open_lan("yard", "not an SDP offer", user="bob", remote="192.0.2.8")
        assert info.value.code == "bad_offer"
        assert box.hub.sessions == {}, "a refused offer must not keep its viewer slot"
        (started,) = box.events("started")
        (ended,) = box.events("ended")
        assert started["session"].startswith("lan-") and started["operator"] == "lan:bob"
        assert ended["session"] == started["session"] and ended["why"] == "offer refused"
        assert started["remote"] == "192.0.2.8"
        assert box.ended == [], "a LAN session has no console to tell"

    asyncio.run(run())


def test_offer_for_an_unknown_session_is_refused() -> None:
    async def run() -> None:
        box = Box()
        with pytest.raises(LiveRefused) as info:
            await box.hub.offer("ghost", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
        assert info.value.code == "unknown_session" and "cmd/live" in info.value.reason

    asyncio.run(run())


# -- reaper -----------------------------------------------------------------------------------
def quick(idle_s: int, max_s: int) -> SiteConfig:
    """Timeouts far below what site.toml allows (its bounds are for people, not tests)."""
    cfg = site_config()
    small = cfg.live.model_copy(update={"idle_timeout_s": idle_s, "max_session_s": max_s})
    return cfg.model_copy(update={"live": small})


def test_reaper_closes_idle_and_overlong_sessions() -> None:
    async def run() -> None:
        idle = Box(quick(idle_s=1, max_s=100))
        longest = Box(quick(idle_s=100, max_s=1))
        idle.grant("c1")
        idle.grant("l1", camera="door", via="lan")
        longest.grant("c2")
        beats: list[float] = []
        tasks = [
            asyncio.ensure_future(idle.hub.reaper(lambda: beats.append(time.monotonic()))),
            asyncio.ensure_future(longest.hub.reaper()),
        ]
        try:
            await asyncio.sleep(0.5)
            assert len(idle.hub.sessions) == 2 and len(longest.hub.sessions) == 1, "too early"
            deadline = time.monotonic() + 4.0
            while (idle.hub.sessions or longest.hub.sessions) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert idle.hub.sessions == {} and longest.hub.sessions == {}
        never = "viewer never connected for 1 s"
        assert {b["session"]: b["why"] for b in idle.events("ended")} == {"c1": never, "l1": never}
        assert [b["why"] for b in longest.events("ended")] == ["maximum duration reached (1 s)"]
        assert idle.ended == [("c1", never)], "only central sessions are told (LAN has no console)"
        assert longest.ended == [("c2", "maximum duration reached (1 s)")]
        assert len(beats) >= 2, "the reaper beats the watchdog every round"

    asyncio.run(run())


# -- a real viewer ----------------------------------------------------------------------------
class Camera:
    """The synthetic yard camera feeding a real ring and the hub's feed, as edge-video does."""

    def __init__(self, box_feed: LiveFeed, cfg: SiteConfig) -> None:
        self.ring = PacketRing(pre_s=2.0, max_bytes=8 * 1024 * 1024)
        self.feed = box_feed
        self.source = SyntheticSource(cfg.video.cameras[0], realtime=True)
        self.sent: set[bytes] = set()  # NAL units of every packet the camera produced
        self.task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        async for item in self.source.packets():
            if isinstance(item, EncodedPacket):
                self.sent.update(nal_units(item.data))
                self.ring.push(item)
                self.feed.push(item)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Camera]:
        self.task = asyncio.ensure_future(self._pump())
        try:
            deadline = time.monotonic() + 10
            while not self.ring.latest_keyframe_gop() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert self.ring.latest_keyframe_gop(), "the synthetic camera produced no keyframe"
            yield self
        finally:
            await self.source.close()
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def video_codecs(sdp: str) -> list[str]:
    """Codec names of the video section, in the order of its m= line."""
    section = sdp.split("m=video", 1)[1].split("\r\nm=", 1)[0]
    order = section.split("\r\n", 1)[0].split()[2:]  # after the port and the protocol
    names = {}
    for line in section.split("\r\n"):
        if line.startswith("a=rtpmap:"):
            pt, codec = line[len("a=rtpmap:") :].split(" ", 1)
            names[pt] = codec.split("/")[0]
    return [names[pt] for pt in order]


@contextlib.asynccontextmanager
async def yard_box(cfg: SiteConfig) -> AsyncIterator[tuple[Box, Camera]]:
    box: Box | None = None
    cam: Camera | None = None

    def backlog(camera: str) -> list[EncodedPacket]:
        assert cam is not None
        return cam.ring.latest_keyframe_gop()

    box = Box(cfg, backlog)
    cam = Camera(box.feeds["yard"], cfg)
    async with cam.running():
        try:
            yield box, cam
        finally:
            await box.hub.close_all("test over")


async def connect(box: Box, session: str) -> tuple[Viewer, str, str]:
    """A viewer watching ``session`` (its first frame decoded), its offer and the answer."""
    viewer = Viewer()
    offer = await viewer.offer()
    answer = await box.hub.offer(session, offer)
    await viewer.accept(answer)
    await asyncio.wait_for(viewer.first_frame.wait(), 10)
    return viewer, offer, answer


def test_real_viewer_gets_only_h264_with_the_camera_bytes_until_max_duration() -> None:
    async def run() -> None:
        async with yard_box(quick(idle_s=100, max_s=3)) as (box, cam):
            live = box.grant("s1")
            with recording_decoders() as received:
                viewer, offer, answer = await connect(box, "s1")
                try:
                    offered = video_codecs(offer)
                    assert offered.index("VP8") < offered.index("H264"), offered
                    answered = video_codecs(answer)
                    assert "H264" in answered and set(answered) <= {"H264", "rtx"}, answered
                    reaper = asyncio.ensure_future(box.hub.reaper())
                    try:
                        await asyncio.wait_for(live.ended.wait(), 6)
                    finally:
                        reaper.cancel()
                        await asyncio.gather(reaper, return_exceptions=True)
                finally:
                    await viewer.close()
            units = [u for au in received for u in nal_units(au)]
            assert units and set(units) <= cam.sent, "the viewer must get the camera's own NALs"
            assert units[0][0] & 0x1F == 7, "the first access unit starts with the SPS"
            assert any(u[0] & 0x1F == 5 for u in nal_units(received[0])), "first is an IDR"
            (ended,) = box.events("ended")
            assert ended["why"] == "maximum duration reached (3 s)"
            assert ended["connected"] is True
            assert ended["frames"] > 0 and ended["keyframes"] >= 1 and ended["catchup"] >= 1
            assert box.ended == [("s1", "maximum duration reached (3 s)")]
            assert box.feeds["yard"].viewers == [], "the closed session left the feed"

    asyncio.run(run())


def test_second_offer_for_a_session_is_refused_and_does_not_end_it() -> None:
    async def run() -> None:
        async with yard_box(site_config()) as (box, _):
            live = box.grant("s1")
            viewer, _, _ = await connect(box, "s1")
            intruder = Viewer()
            try:
                with pytest.raises(LiveRefused) as info:
                    await box.hub.offer("s1", await intruder.offer())
                assert info.value.code == "bad_offer"
                assert "already answered" in info.value.reason
                # MQTT QoS 1 may deliver the same offer twice: the answered session is in use.
                assert live.closed is None and "s1" in box.hub.sessions, (
                    "BUG: a refused second offer closed the session already answered and "
                    f"watched (closed: {live.closed!r}); LiveHub.offer should close only a "
                    "session that was never answered"
                )
            finally:
                await intruder.close()
                await viewer.close()

    asyncio.run(run())
