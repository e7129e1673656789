"""End to end: a real mosquitto, `edge run alarm` and `edge run video` as subprocesses on the
same simulated site, the CLI a user types, and ffprobe judging the clip. The cameras are
synthetic (the camera boundary); everything behind them is the real pipeline."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.alarm import BusWatcher, NotifySocket, start_alarm, stop, write_site
from support.broker import Broker

EDGE = str(Path(sys.executable).with_name("edge"))
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
PRE_S, POST_S = 2.0, 3.0

CAMERAS = f"""
[[video.cameras]]
id = "yard"
source = "synthetic"
url = "walker"
width = 320
height = 240
fps = 10
gop_s = 1

[[video.cameras]]
id = "office"
source = "synthetic"
url = "walker?seed=2"
width = 320
height = 240
fps = 10
gop_s = 1
alarm_zones = ["office"]

[video.clips]
pre_s = {PRE_S}
post_s = {POST_S}
"""


def edge(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGE, *args], capture_output=True, text=True, timeout=timeout)


class Notifications:
    """Reads a notify socket all the time, as systemd does: unread, a datagram socket holds
    10 messages (net.unix.max_dgram_qlen) and then blocks the sender's WATCHDOG=1."""

    def __init__(self, notify: NotifySocket) -> None:
        self.notify = notify
        self.fields: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.notify.path

    def _read(self) -> None:
        self.notify.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = self.notify.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.fields.extend(data.split("\n"))

    def wait_for(self, field: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while field not in self.fields:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {field} within {timeout} s; got {self.fields}")
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.notify.close()


def start_video(site: Path, workdir: Path, notify: Notifications) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["NOTIFY_SOCKET"] = str(notify.path)
    env["WATCHDOG_USEC"] = "1000000"  # WATCHDOG=1 every 0.5 s while every loop beats
    log = open(workdir / "video.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [EDGE, "run", "video", "--config", str(site)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         "-show_frames", "-read_intervals", "%+#1", "-show_entries",
         "format=duration:stream=codec_name,width,height:frame=key_frame,pict_type", str(path)],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


class Box:
    def __init__(self, tmp: Path, broker: Broker) -> None:
        self.tmp = tmp
        self.site = write_site(tmp, broker.url, extra=CAMERAS)
        self.alarm_notify = NotifySocket(tmp / "alarm.sock")
        self.video_notify = Notifications(NotifySocket(tmp / "video.sock"))
        self.port = int(broker.port or 0)
        self.watch = BusWatcher("127.0.0.1", self.port)
        self.alarm = start_alarm(self.site, tmp, self.alarm_notify)
        self.video = start_video(self.site, tmp, self.video_notify)
        self.alarm_notify.wait_for("READY=1", timeout=10)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return edge(*args, "--config", str(self.site))

    def log(self) -> str:
        return (self.tmp / "video.log").read_text(errors="replace")

    def close(self) -> None:
        self.watch.close()
        stop(self.video)
        stop(self.alarm)
        self.alarm_notify.close()
        self.video_notify.close()


@pytest.fixture
def box(tmp_path: Path, broker: Broker) -> Iterator[Box]:
    b = Box(tmp_path, broker)
    yield b
    b.close()


@pytest.mark.skipif(not Path(FFPROBE).exists(), reason="ffprobe is not installed")
def test_panic_gets_a_clip_with_pre_and_post_alarm_video(box: Box) -> None:
    box.video_notify.wait_for("READY=1", timeout=15)
    assert "STATUS=cameras: yard up, office up" in box.video_notify.fields
    box.video_notify.wait_for("WATCHDOG=1", timeout=3)
    up = box.watch.wait("edge/video/yard/state", timeout=10, up=True).json()
    assert up["camera"] == "yard"
    time.sleep(PRE_S + 1.5)  # the ring holds the pre-alarm video by now
    # The journal's clip_saved may come before edge/up/clips: a watcher of its own, so the
    # waits for other topics below do not pass over it.
    journal = BusWatcher("127.0.0.1", box.port, ("edge/events",))

    assert box.cli("sim", "trip", "panic").returncode == 0
    received = box.watch.wait("edge/events", kind="panic")
    event = received.json()
    left = received.at + POST_S + 2 - time.monotonic()  # the clip is due post_s + 2 s after
    meta = box.watch.wait(f"edge/clips/{event['id']}", timeout=left).json()
    assert (meta["v"], meta["event_id"], meta["camera"]) == (1, event["id"], "yard")
    assert meta["duration_s"] >= PRE_S + POST_S and meta["snapshot"] is True
    # The walker crosses 6 s out of 8: the whole-frame tag zone saw motion during the clip.
    assert meta["motion"] == ["frame"]
    up_meta = box.watch.wait(f"edge/up/clips/{event['id']}", timeout=2).json()
    assert up_meta == meta

    shown = box.cli("clips", "show", event["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    # The office camera films only its own zone's alarms: one clip, from the yard camera.
    assert [(r["camera"], r["id"], r["sha256"]) for r in records] == [
        ("yard", meta["clip_id"], meta["sha256"])
    ]
    info = probe(Path(records[0]["path"]))
    assert info["streams"][0]["codec_name"] == "h264"
    assert (info["streams"][0]["width"], info["streams"][0]["height"]) == (320, 240)
    assert info["frames"][0]["key_frame"] == 1
    assert float(info["format"]["duration"]) >= PRE_S + POST_S
    # The clip starts before the alarm: its start is at least pre_s before the event.
    start = records[0]["start_ts"]
    assert start <= event["ts"] and records[0]["end_ts"] > event["ts"]
    # edge-alarm journals the clip, linked to the event (every clip kept or deleted is).
    saved = journal.wait("edge/events", timeout=15, kind="clip_saved").json()
    journal.close()
    assert saved["details"]["clip_id"] == meta["clip_id"]
    assert event["id"] in saved["details"]["events"]
    assert saved["details"]["motion"] == ["frame"]

    box.video.send_signal(signal.SIGTERM)
    assert box.video.wait(timeout=15) == 0, box.log()[-3000:]


def test_zone_filter_and_clean_stop_while_recording(box: Box) -> None:
    """An office alarm films both cameras; SIGTERM during post-alarm still writes both clips."""
    box.video_notify.wait_for("READY=1", timeout=15)
    box.watch.wait("edge/video/office/state", timeout=10, up=True)
    time.sleep(PRE_S + 1.0)
    assert box.cli("panel", "arm").returncode == 0
    box.watch.wait("edge/events", kind="armed")
    assert box.cli("sim", "trip", "office").returncode == 0
    event = box.watch.wait("edge/events", kind="burglary").json()
    time.sleep(1.0)  # inside the post-alarm period
    box.video.send_signal(signal.SIGTERM)
    assert box.video.wait(timeout=15) == 0, box.log()[-3000:]
    cameras = set()
    for _ in range(2):
        meta = box.watch.wait(f"edge/clips/{event['id']}", timeout=5).json()
        assert meta["duration_s"] >= PRE_S  # cut short by the stop, yet pre-alarm is there
        cameras.add(meta["camera"])
    assert cameras == {"yard", "office"}
    stopped = box.watch.wait("edge/video/status", timeout=5, running=False).json()
    assert set(stopped["cameras"]) == {"yard", "office"}


@pytest.mark.skipif(not Path(FFPROBE).exists(), reason="ffprobe is not installed")
def test_alarm_in_the_first_second_gets_a_clip_or_a_reason(box: Box) -> None:
    """Alarms as edge-video starts: the ring holds less than pre_s (or nothing). The clip
    starts at the camera's first frame and says so; an alarm whose whole clip was over
    before the camera's first frame gets no clip, and the journal says why."""
    box.video_notify.wait_for("READY=1", timeout=15)  # the cameras have just delivered
    box.watch.publish("edge/sim/zones/panic/set", "trip")
    early_ts = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
    early = {"v": 1, "id": "before-video-1", "kind": "panic", "category": "alarm",
             "zone": "panic", "ts": early_ts.isoformat(timespec="milliseconds")}  # fmt: skip
    box.watch.publish("edge/events", json.dumps(early))
    seen: dict[str, Any] = {}  # kind -> event, "clip" -> metadata, in whatever order
    deadline = time.monotonic() + POST_S + 15
    while not {"panic", "clip", "clip_saved", "clip_missed"} <= set(seen):
        msg = box.watch.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
        body = msg.json() if msg.topic.startswith(("edge/events", "edge/clips/")) else None
        if msg.topic == "edge/events" and body["id"] != early["id"]:
            seen.setdefault(body["kind"], body)
        elif "panic" in seen and msg.topic == f"edge/clips/{seen['panic']['id']}":
            seen["clip"] = body
    meta = seen["clip"]
    assert 0.0 <= meta["pre_alarm_s"] < PRE_S, meta
    assert "pre-alarm shorter than configured" in meta["note"], meta
    assert "the camera had just started" in meta["note"]
    shown = box.cli("clips", "show", seen["panic"]["id"], "--json")
    info = probe(Path(json.loads(shown.stdout.splitlines()[0])["path"]))
    assert info["frames"][0]["key_frame"] == 1
    assert float(info["format"]["duration"]) >= POST_S
    assert seen["clip_saved"]["details"]["note"] == meta["note"]  # in the journal too
    missed = seen["clip_missed"]["details"]
    assert (missed["event_id"], missed["camera"]) == ("before-video-1", "yard")
    assert "no video yet" in missed["why"]


# -- the two pure pieces the clip timing rests on ---------------------------------------------
def test_stream_clock_keeps_the_smallest_delay_and_follows_a_restart() -> None:
    from edge.video.camera import StreamClock

    clock = StreamClock()
    # Packets captured at stream time s arrive at 100 + s plus a varying delay (encoding,
    # queueing): the offset estimate is the smallest delay, not the mean.
    for i, delay in enumerate([0.08, 0.02, 0.15, 0.03, 0.30]):
        clock.observe(stream_s=i * 0.1, mono=100 + i * 0.1 + delay)
    assert clock.offset == pytest.approx(100.02, abs=0.001)  # leaks up 1 ms per s
    # The stream restarts at pts 0 (camera reconnected): the estimate starts afresh.
    clock.observe(stream_s=0.0, mono=200.0)
    assert (clock.offset, clock.resets) == (pytest.approx(200.0), 1)


def test_stream_clock_maps_an_event_time_to_stream_time() -> None:
    from edge.video.camera import StreamClock

    clock = StreamClock()
    now_mono = time.monotonic()
    clock.observe(stream_s=50.0, mono=now_mono)  # the camera shows stream second 50 now
    assert clock.stream_s(time.time() - 3.0) == pytest.approx(47.0, abs=0.05)
    assert clock.stream_s(time.time() + 60.0) == pytest.approx(50.0, abs=0.05)  # future: now
    assert clock.wall(47.0) == pytest.approx(time.time() - 3.0, abs=0.05)


def test_only_alarm_and_tamper_events_want_a_clip() -> None:
    from edge.events import Event, Kind
    from edge.video.service import alarm_of

    panic = alarm_of(Event(Kind.PANIC, zone_id="panic").to_dict())
    assert panic is not None and (panic.kind, panic.zone) == ("panic", "panic")
    assert panic.wall == pytest.approx(time.time(), abs=2.0)
    assert alarm_of(Event(Kind.TAMPER, zone_id="lid").to_dict()) is not None
    for kind in (Kind.PANIC_RESTORE, Kind.TAMPER_RESTORE, Kind.ARMED, Kind.LOOP_FAULT):
        assert alarm_of(Event(kind, zone_id="panic").to_dict()) is None
    with pytest.raises(ValueError):
        alarm_of({"category": "alarm", "kind": "panic", "id": "a/b", "ts": "2024-01-01T00:00Z"})


def test_ring_says_how_much_pre_alarm_it_holds() -> None:
    from fractions import Fraction

    from edge.video.frames import EncodedPacket
    from edge.video.ring import PacketRing

    ring = PacketRing(pre_s=5.0, max_bytes=1 << 20)
    assert ring.held_before(10.0, 5.0) == 0.0  # nothing yet: the clip starts at a first frame

    def push_until(end_s: float) -> None:
        start = len(ring)
        for n in range(start, int(end_s * 10)):  # 10 fps, a keyframe every second
            ring.push(EncodedPacket("cam", b"x", n, Fraction(1, 10), n % 10 == 0))

    push_until(1.5)  # the camera started at 0 s, 1.5 s ago
    assert ring.held_before(1.4, 5.0) == pytest.approx(1.4)  # from the first keyframe only
    assert ring.held_before(-1.0, 5.0) == 0.0  # an alarm before the first frame
    push_until(20.0)
    assert ring.held_before(19.5, 5.0) == pytest.approx(5.5)  # the keyframe at or before 14.5
