"""The motion pre-analysis on the synthetic camera's scenes, end to end through the real
source (rendered, masked, encoded, decimated) and the real detector: a person walking
triggers, a light switched on, the IR day/night switch (grey, flatter, gamma-lifted, same
mean) and the IR cut-over at dusk do not, and a walk through an IR switch stays one event."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge.config.video import Camera, Motion
from edge.video.frames import LumaFrame
from edge.video.motion import MotionDetector, MotionEvent
from edge.video.sources.synthetic import SyntheticSource

SECONDS = 12.0
FPS = 10


async def luma_frames(url: str) -> list[LumaFrame]:
    cam = Camera(id="cam1", source="synthetic", url=url, width=320, height=240, fps=FPS)
    source = SyntheticSource(cam, realtime=False)
    frames: list[LumaFrame] = []
    try:
        async for item in source.packets():
            if isinstance(item, LumaFrame):
                frames.append(item)
                if item.seconds >= SECONDS:
                    break
    finally:
        await source.close()
    return frames


def motion_events(url: str) -> tuple[list[MotionEvent], list[dict[str, Any]]]:
    frames = asyncio.run(asyncio.wait_for(luma_frames(url), 60))
    detector = MotionDetector(Motion(), frames[0].y.shape)
    started: list[MotionEvent] = []
    stats: list[dict[str, Any]] = []
    for frame in frames:
        started += [e for e in detector.feed(frame.y, frame.seconds) if e.end_s is None]
        stats.append(dict(detector.last_stats))
    return started, stats


def test_a_person_walking_across_triggers() -> None:
    started, _ = motion_events("walker?start=1&period=4&pause=2")
    # Two crossings in 12 s (1-5 s and 7-11 s): each one starts motion.
    assert len(started) >= 2
    assert 1.0 <= started[0].start_s <= 3.0 and 7.0 <= started[-1].start_s <= 9.5


def test_a_walk_through_the_ir_switch_is_one_event_per_crossing() -> None:
    """The switch at 3 s comes mid-crossing (1-5 s): the old detector merged everything from
    there into one long event; now each crossing is its own event, as without the switch."""
    started, stats = motion_events("walker?start=1&period=4&pause=2&ir=3")
    assert [round(e.start_s) for e in started] == [1, 7], started
    assert [s["t_s"] for s in stats if s["lighting"]] == [3.0]
    assert not any(s["holdoff"] for s in stats)


@pytest.mark.parametrize("url", ["lights?at=4", "dusk?start=2&fade=6", "ir?at=4", "ir?at=3&back=8"])
def test_lighting_changes_do_not_trigger(url: str) -> None:
    started, stats = motion_events(url)
    assert started == []
    if not url.startswith("dusk"):
        switches = 2 if "back" in url else 1
        assert sum(bool(s["lighting"]) for s in stats) == switches  # seen, and suppressed
        assert not any(s["holdoff"] for s in stats), "never blind"
