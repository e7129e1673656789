"""A box bus that fails while a clip is announced must not cost the clip: BusError is a
ConnectionError, hence an OSError, and was taken for an unreadable file, so the clip was
skipped until the next restart. Real parts: a real MP4 in a real ClipIndex and a real Bus
that has no broker (its publish fails as it does when the broker is gone)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path

from support import h264

from edge.bus import Bus
from edge.tasks import within
from edge.video.clip_index import ClipIndex
from edge.video.clips import ClipInfo, sha256_file, write_mp4
from edge.video.delivery import ClipSender

CLIP = "cam1-0001"


def test_a_failing_bus_delays_a_clip_but_never_skips_it(tmp_path: Path) -> None:
    index_path = tmp_path / "clips" / "index.db"
    index_path.parent.mkdir(parents=True)
    mp4 = index_path.parent / f"{CLIP}.mp4"
    write_mp4(h264.encode(30), mp4)
    info = ClipInfo(
        id=CLIP, camera="cam1", event_ids=("ev-1",), path=mp4, snapshot=None, alarm_s=1.0,
        start_s=0.0, end_s=3.0, duration_s=3.0, bytes=mp4.stat().st_size,
        sha256=sha256_file(mp4), width=h264.WIDTH, height=h264.HEIGHT, frames=30,
    )  # fmt: skip

    async def main() -> set[str]:
        with ClipIndex(index_path) as index:
            index.add(info, dt.datetime.now(dt.timezone.utc))
            bus = Bus("mqtt://127.0.0.1:9", "clip-sender-test")  # never started: publish fails
            sender = ClipSender(site_id="site-a", bus=bus, index=index)
            sender.link_up = True  # as if the bridge said 1, while the box bus fails
            with contextlib.suppress(TimeoutError):
                await within(sender.run_sender(), 2.5)  # two attempts, 1 s apart
            sender.close()
            return set(sender.failed)

    assert asyncio.run(main()) == set()  # retried, not written off as unreadable
