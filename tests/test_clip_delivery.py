"""Clip transfer with real parts: the central mosquitto (TLS, shipped ACL), the box broker with
our bridge, a real MP4 in a real ClipIndex, and the ClipSender run in-process (in a thread with
its own event loop) as edge-video runs it. A console peer reassembles and acknowledges."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import h264
from support.broker import Broker
from support.central import Peer, central_section, console, start_box, start_central
from support.pki import Pki, make_pki

from edge.bus import Bus
from edge.bus.identity import load_credentials
from edge.tasks import supervise
from edge.video.clip_index import ClipIndex
from edge.video.clips import ClipInfo, sha256_file, write_mp4
from edge.video.delivery import ClipSender, Progress, chunk_count
from edge.video.service import clip_payload

SITE = "site-a"
EVENT = "ev-0001"
CLIP = "cam1-0001"
CHUNK = 512
WAIT = 15.0


class SenderThread:
    """A ClipSender on its own event loop, stoppable from the test."""

    def __init__(self, box: Broker, index_path: Path) -> None:
        """The sender runs under edge-video's identity, as in the real service."""
        assert box.identities is not None
        self.box_url, self.index_path = box.url, index_path
        self.credentials = load_credentials(box.identities, "edge-video")
        self.loop = asyncio.new_event_loop()
        self.stop_evt = asyncio.Event()  # binds to a loop at first use (3.10+)
        self.sender: ClipSender | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))
        self.thread.start()

    async def _main(self) -> None:
        bus = Bus(self.box_url, "clip-sender-test", credentials=self.credentials)
        await bus.start()
        index = ClipIndex(self.index_path)
        self.sender = ClipSender(
            site_id=SITE,
            bus=bus,
            index=index,
            chunk_bytes=CHUNK,
            window=4,
            ack_timeout_s=0.5,
            metadata=clip_payload,
        )
        runner = asyncio.ensure_future(supervise(self.sender.loops()))
        stopper = asyncio.ensure_future(self.stop_evt.wait())
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():  # a loop failed: the test must see it
                self.error = runner.exception()
        finally:
            runner.cancel()
            stopper.cancel()
            await asyncio.gather(runner, stopper, return_exceptions=True)
            await bus.close()
            self.sender.close()
            index.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_evt.set)
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.loop.close()
        assert self.error is None, f"the sender failed: {self.error!r}"


@pytest.fixture()
def brokers(tmp_path: Path) -> Iterator[tuple[Broker, Broker, Pki]]:
    pki = make_pki(tmp_path / "pki", (SITE,))
    central = start_central(tmp_path / "central", pki)
    box = None
    try:
        section = central_section(pki, SITE, int(central.port or 0))
        box = start_box(tmp_path / "box", SITE, section)
        yield central, box, pki
    finally:
        if box is not None:
            box.stop()
        central.stop()


def make_clip(tmp_path: Path) -> tuple[Path, ClipInfo]:
    index_path = tmp_path / "clips" / "index.db"
    index_path.parent.mkdir(parents=True)
    mp4 = index_path.parent / f"{CLIP}.mp4"
    write_mp4(h264.encode(120), mp4)
    info = ClipInfo(
        id=CLIP, camera="cam1", event_ids=(EVENT,), path=mp4, snapshot=None, alarm_s=1.0,
        start_s=0.0, end_s=12.0, duration_s=12.0, bytes=mp4.stat().st_size,
        sha256=sha256_file(mp4), width=h264.WIDTH, height=h264.HEIGHT, frames=120,
    )  # fmt: skip
    with ClipIndex(index_path) as index:
        index.add(info, dt.datetime.now(dt.timezone.utc))
    return index_path, info


def open_console(central: Broker, pki: Pki) -> Peer:
    peer = console(central, pki)
    peer.subscribe(f"sites/{SITE}/clips/#")
    return peer


def receive(peer: Peer, store: dict[int, bytes], stop_at: int, got: list[int]) -> None:
    """Store chunks and ack cumulatively until ``stop_at`` chunks are stored contiguously."""
    prefix = f"sites/{SITE}/clips/{EVENT}/{CLIP}/"
    ack_topic = f"sites/{SITE}/clips/{EVENT}/ack"
    have = 0
    while have < stop_at:
        msg = peer.inbox.get(timeout=WAIT)
        if not msg.topic.startswith(prefix):
            continue
        n = int(msg.topic[len(prefix) :])
        got.append(n)
        store[n] = msg.payload
        while have in store:
            have += 1
        peer.publish(ack_topic, json.dumps({"v": 1, "clip_id": CLIP, "have": have}))


def wait_for(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def delivered(index: ClipIndex) -> bool:
    record = index.get(CLIP)
    return record is not None and record.delivered


def test_clip_resumes_after_central_outage_and_restart(
    tmp_path: Path, brokers: tuple[Broker, Broker, Pki]
) -> None:
    central, box, pki = brokers
    index_path, info = make_clip(tmp_path)
    chunks = chunk_count(info.bytes, CHUNK)
    assert chunks >= 8, f"clip too small for the test: {info.bytes} bytes"
    half = chunks // 2
    peer = open_console(central, pki)
    sender = SenderThread(box, index_path)
    store: dict[int, bytes] = {}
    first: list[int] = []
    try:
        meta = json.loads(peer.expect(f"sites/{SITE}/clips/{EVENT}", WAIT).payload)
        assert meta["clip_id"] == CLIP and meta["sha256"] == info.sha256
        assert (meta["chunks"], meta["chunk_bytes"]) == (chunks, CHUNK)
        receive(peer, store, half, first)
        progress = Progress(index_path)
        wait_for(lambda: progress.get(CLIP) == half, f"progress {half} persisted")
    finally:
        peer.close()
        central.kill()  # mid-transfer: the central station vanishes
        sender.stop()  # and edge-video restarts meanwhile
    assert progress.get(CLIP) == half
    central.restart()
    peer = open_console(central, pki)
    sender = SenderThread(box, index_path)
    second: list[int] = []
    try:
        meta = json.loads(peer.expect(f"sites/{SITE}/clips/{EVENT}", WAIT).payload)
        assert meta["chunks"] == chunks
        receive(peer, store, chunks, second)
        data = b"".join(store[n] for n in range(chunks))
        assert hashlib.sha256(data).hexdigest() == info.sha256
        ack = {"v": 1, "clip_id": CLIP, "done": True, "sha256": info.sha256}
        peer.publish(f"sites/{SITE}/clips/{EVENT}/ack", json.dumps(ack))
        with ClipIndex(index_path, readonly=True) as index:
            wait_for(lambda: delivered(index), "the clip marked delivered")
    finally:
        peer.close()
        sender.stop()
    # resumed from the last ack: nothing before it was sent again
    assert second and min(second) >= half, f"resent before {half}: {sorted(second)}"
    assert progress.get(CLIP) == 0  # progress forgotten once delivered
    progress.close()


def test_clip_resumes_after_link_outage_with_sender_running(
    tmp_path: Path, brokers: tuple[Broker, Broker, Pki]
) -> None:
    """The link drops while edge-video keeps running: the sender holds, then resumes from K."""
    central, box, pki = brokers
    index_path, info = make_clip(tmp_path)
    chunks = chunk_count(info.bytes, CHUNK)
    third = chunks // 3
    peer = open_console(central, pki)
    sender = SenderThread(box, index_path)
    store: dict[int, bytes] = {}
    first: list[int] = []
    second: list[int] = []
    progress = Progress(index_path)
    try:
        peer.expect(f"sites/{SITE}/clips/{EVENT}", WAIT)
        receive(peer, store, third, first)
        wait_for(lambda: progress.get(CLIP) == third, f"progress {third} persisted")
        peer.close()
        central.kill()
        running = sender.sender
        assert running is not None
        wait_for(lambda: not running.link_up, "the sender to see the link down")
        central.restart()
        peer = open_console(central, pki)
        receive(peer, store, chunks, second)
        ack = {"v": 1, "clip_id": CLIP, "done": True, "sha256": info.sha256}
        peer.publish(f"sites/{SITE}/clips/{EVENT}/ack", json.dumps(ack))
        with ClipIndex(index_path, readonly=True) as index:
            wait_for(lambda: delivered(index), "the clip marked delivered")
    finally:
        peer.close()
        sender.stop()
        progress.close()
    assert hashlib.sha256(b"".join(store[n] for n in range(chunks))).hexdigest() == info.sha256
    assert second and min(second) >= third, f"resent before {third}: {sorted(second)}"
