"""Live view: time to first frame with instant start, and what passthrough saves in CPU.

Everything at 1280x720, 15 fps, a keyframe every 2 s, in one run:

1. Time to first decoded frame (TTFF) against the real `edge run video` (a synthetic camera)
   through a real box mosquitto. N_SESSIONS sessions, one after another, each begun after a
   random 0-2 s pause so that the viewer joins at a random point of the GOP: the bench asks
   for a grant on edge/live/grant as edge-alarm would, then an aiortc viewer (the central
   console's part) sends its offer on edge/down/live/<session>/offer and applies the answer
   from edge/up/live/<session>/answer. TTFF runs from the moment the viewer starts creating
   its offer (ICE gathering included) to the first frame its decoder gives. Percentiles are
   nearest-rank: with 20 sessions, p95 is the slowest one.

   The reference `ttff_wait_keyframe_*` is measured in the same sessions, not modelled: the
   viewer keeps watching until it decodes the camera's NEXT keyframe, the first one pushed
   live after its track started (the catch-up burst holds exactly one keyframe, so this is
   the second keyframe decoded). A server without instant start, forwarding live packets from
   the next keyframe on, would show its first picture then: same link, same receiver (whose
   jitter buffer releases a frame when the next one begins, in both cases).

2. CPU per frame per viewer on the sender, in this process, on the same real 720p packets
   (10 s of the synthetic walker scene encoded exactly as edge-video's synthetic camera does):
   passthrough = PassthroughTrack.recv() from a LiveFeed + aiortc's H264Encoder.pack() (RTP
   payloads); re-encode = aiortc's H264Decoder (PyAV h264) + H264Encoder.encode() (libx264
   with aiortc's own settings), what a transcoding server does for each viewer. CPU is
   process time (every thread, should libx264 use several), taken before anything else runs.
   Both paths then pay the same kind of RTP send work (header + SRTP of each payload); it is
   measured on each path's own payloads and folded into `cpu_ratio_with_rtp_send`, so the
   main ratio (which leaves it out) is not the only figure.

3. edge-video's own CPU (utime + stime from /proc) over CPU_WINDOW_S with 0 viewers, then with
   4: the synthetic camera's rendering and libx264 encoding are in both; the difference is
   what 4 passthrough viewers cost (RTP, SRTP, DTLS, RTCP). The viewers decode in this
   process, which competes with edge-video for the machine's cores.

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import BusWatcher, NotifySocket, percentile, start_mosquitto, stop, write_site
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.h264 import H264Decoder, H264Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import SRTP_PROFILES
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session
from support.alarm import Received

from edge.tasks import within
from edge.video.frames import EncodedPacket
from edge.video.live.feed import LiveFeed
from edge.video.live.signalling import GRANT, REPLY_BASE
from edge.video.live.track import PassthroughTrack
from edge.video.sources.scenes import Scene
from edge.video.sources.synthetic import FrameEncoder

WIDTH, HEIGHT, FPS, GOP_S = 1280, 720, 15, 2
N_SESSIONS = 20
CPU_VIEWERS = 4
CPU_WINDOW_S = 10.0
WARMUP_S = 3.0  # after READY=1: the ring holds a whole GOP, the encoder is steady
SETTLE_S = 2.0  # after the 4 viewers connected, before their CPU window
PASSTHROUGH_PASSES = 20
REENCODE_PASSES = 2
CAMERA = "yard"
TICK = os.sysconf("SC_CLK_TCK")
EDGE = str(Path(sys.executable).with_name("edge"))
Payloads = list[list[bytes]]  # the RTP payloads of each frame
Pass = tuple[float, Payloads]  # CPU seconds of a pass, and its payloads
TARGETS = {"target_ttff_p95_ms": 300, "target_cpu_ratio": 0.2}
LIVE_TOML = f"""
[[video.cameras]]
id = "{CAMERA}"
source = "synthetic"
url = "walker"
width = {WIDTH}
height = {HEIGHT}
fps = {FPS}
gop_s = {GOP_S}

[live]
policy = "always"
viewers_per_camera = {CPU_VIEWERS}

[web]
enabled = false
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def spread(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):.0f} ms, p95 {percentile(values, 95):.0f} ms, "
        f"min {min(values):.0f}, max {max(values):.0f}"
    )


# -- 2. CPU per frame, in process ------------------------------------------------------------
def real_packets() -> list[EncodedPacket]:
    """10 s of the walker scene, encoded like edge-video's synthetic camera encodes it."""
    scene = Scene("walker", WIDTH, HEIGHT)
    encoder = FrameEncoder("bench", WIDTH, HEIGHT, FPS, GOP_S, hardware=False)
    packets: list[EncodedPacket] = []
    for n in range(FPS * 10):
        img = scene.render(n / FPS, n)
        if img is None:
            raise RuntimeError("the walker scene gave no picture: check edge/video/sources/scenes")
        packets += encoder.encode(img, n)
    packets += encoder.flush()
    return packets


async def passthrough_pass(packets: list[EncodedPacket]) -> Pass:
    """CPU seconds of one viewer's sender work over ``packets``, and the RTP payloads."""
    feed = LiveFeed("bench")
    # The first packet (a keyframe) is the catch-up backlog, the rest arrive live.
    track = PassthroughTrack(feed, lambda: packets[:1])
    rtp = H264Encoder()
    frames: Payloads = []
    t0 = time.process_time()
    frames.append(rtp.pack(await track.recv())[0])
    for pkt in packets[1:]:
        feed.push(pkt)
        frames.append(rtp.pack(await track.recv())[0])
    spent = time.process_time() - t0
    track.stop()
    return spent, frames


def reencode_pass(packets: list[EncodedPacket]) -> Pass:
    """CPU seconds of a transcoding server's work for one viewer, and its RTP payloads."""
    decoder, encoder = H264Decoder(), H264Encoder()
    frames: Payloads = []
    t0 = time.process_time()
    for pkt in packets:
        for frame in decoder.decode(JitterFrame(pkt.data, round(pkt.seconds * 90_000))):
            frames.append(encoder.encode(frame)[0])
    spent = time.process_time() - t0
    return spent, frames


def rtp_send_seconds(frames: Payloads) -> float:
    """CPU seconds of RTP headers + SRTP protection (aiortc's preferred profile) of payloads."""
    profile = SRTP_PROFILES[0]
    key = os.urandom(profile.key_length + profile.salt_length)
    policy = Policy(
        key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile.libsrtp_profile
    )
    session = Session(policy)
    seq = 0
    t0 = time.process_time()
    for n, payloads in enumerate(frames):
        for i, payload in enumerate(payloads):
            last = int(i == len(payloads) - 1)
            pkt = RtpPacket(96, last, seq & 0xFFFF, n * 6000, 0x1234, payload)
            session.protect(pkt.serialize())
            seq += 1
    return time.process_time() - t0


def per_frame(passes: int, one_pass: Callable[[], Pass]) -> tuple[float, Payloads, int]:
    """CPU ms per frame over ``passes``, the last pass's payloads, and the frames timed."""
    spent, n = 0.0, 0
    frames: Payloads = []
    for _ in range(passes):
        seconds, frames = one_pass()
        spent, n = spent + seconds, n + len(frames)
    return spent / n * 1000, frames, n


def cpu_per_frame() -> dict[str, float]:
    packets = real_packets()
    size = sum(len(p.data) for p in packets) / len(packets) / 1000
    say(f"cpu: {len(packets)} packets of real 720p H.264 ({size:.1f} kB each on average)")
    passthrough, pt_frames, pt_n = per_frame(
        PASSTHROUGH_PASSES, lambda: asyncio.run(passthrough_pass(packets))
    )
    reencode, re_frames, re_n = per_frame(REENCODE_PASSES, lambda: reencode_pass(packets))
    send_pt = rtp_send_seconds(pt_frames) / len(pt_frames) * 1000
    send_re = rtp_send_seconds(re_frames) / len(re_frames) * 1000
    say(
        f"cpu per frame per viewer: passthrough {passthrough:.3f} ms ({pt_n} frames), "
        f"re-encode {reencode:.2f} ms ({re_n} frames); RTP send: {send_pt:.3f} ms "
        f"({sum(map(len, pt_frames)) / len(pt_frames):.1f} packets/frame) vs {send_re:.3f} ms "
        f"({sum(map(len, re_frames)) / len(re_frames):.1f} packets/frame)"
    )
    return {
        "cpu_ms_per_frame_passthrough": round(passthrough, 4),
        "cpu_ms_per_frame_reencode": round(reencode, 3),
        "cpu_ratio": round(passthrough / reencode, 4),
        "cpu_ms_per_frame_rtp_send_passthrough": round(send_pt, 4),
        "cpu_ms_per_frame_rtp_send_reencode": round(send_re, 4),
        "cpu_ratio_with_rtp_send": round((passthrough + send_pt) / (reencode + send_re), 4),
        "cpu_frames_passthrough": pt_n,
        "cpu_frames_reencode": re_n,
    }


# -- 1 and 3. The real edge-video ------------------------------------------------------------
class TimedViewer:
    """A receive-only aiortc peer that timestamps every decoded frame (monotonic, RTP pts,
    keyframe); the central console's side, so instrumenting it changes nothing on the box."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.on("track", self._track)
        self.started = 0.0
        self.frames: list[tuple[float, int, bool]] = []
        self.first_frame = asyncio.Event()
        self.keyframes = 0
        self.live_keyframe = asyncio.Event()  # the camera's next keyframe after the catch-up
        self.reader: asyncio.Task[None] | None = None

    async def offer(self) -> str:
        self.started = time.monotonic()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    def _track(self, track: Any) -> None:
        if track.kind == "video":
            self.reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                key = bool(frame.key_frame)
                self.frames.append((time.monotonic(), int(frame.pts or 0), key))
                self.first_frame.set()
                self.keyframes += key
                if self.keyframes >= 2:
                    self.live_keyframe.set()

    def ttff_ms(self) -> float:
        return (self.frames[0][0] - self.started) * 1000

    def wait_keyframe_ms(self) -> float:
        second_key = [at for at, _, key in self.frames if key][1]
        return (second_key - self.started) * 1000

    def catchup_frames(self) -> int:
        """Frames of the instant-start burst: the box spaces them 1 ms apart (90 ticks)."""
        n = 1
        while n < len(self.frames) and self.frames[n][1] - self.frames[n - 1][1] < 1000:
            n += 1
        return n

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.pc.close()


def next_on(bus: BusWatcher, topics: tuple[str, ...], timeout: float) -> Received:
    """The next message on one of ``topics`` (others are dropped)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = bus.inbox.get(timeout=left)
        except queue.Empty:
            break
        if msg.topic in topics:
            return msg
    raise TimeoutError(f"nothing on {' or '.join(topics)} within {timeout:g} s")


async def open_session(bus: BusWatcher, label: str) -> tuple[str, TimedViewer]:
    """Grant (as edge-alarm asks it), offer, answer; returns once the first frame is shown."""
    session, token = uuid.uuid4().hex, uuid.uuid4().hex[:12]
    reply = f"{REPLY_BASE}/{token}"
    grant = {"session": session, "camera": CAMERA, "operator": "bench", "reason": label}
    bus.publish(GRANT, json.dumps({**grant, "reply": reply}))
    answer = (await asyncio.to_thread(next_on, bus, (reply,), 10)).json()
    if not answer.get("ok"):
        raise RuntimeError(f"edge-video refused the grant for {label}: {answer}")
    viewer = TimedViewer()
    offer = {"v": 1, "type": "offer", "sdp": await viewer.offer()}
    bus.publish(f"edge/down/live/{session}/offer", json.dumps(offer))
    topics = (f"edge/up/live/{session}/answer", f"edge/up/live/{session}/bye")
    msg = await asyncio.to_thread(next_on, bus, topics, 15)
    if msg.topic.endswith("/bye"):
        await viewer.close()
        raise RuntimeError(f"edge-video refused the offer for {label}: {msg.json()}")
    await viewer.accept(str(msg.json()["sdp"]))
    await within(viewer.first_frame.wait(), 10)
    return session, viewer


async def close_session(bus: BusWatcher, session: str, viewer: TimedViewer) -> None:
    bus.publish(f"edge/down/live/{session}/bye", json.dumps({"v": 1}))
    await viewer.close()


async def ttff_sessions(bus: BusWatcher, rng: random.Random) -> dict[str, Any]:
    ttff: list[float] = []
    waited: list[float] = []
    catchup: list[int] = []
    for n in range(N_SESSIONS):
        await asyncio.sleep(rng.uniform(0, GOP_S))
        session, viewer = await open_session(bus, f"ttff {n + 1}")
        try:
            if not viewer.frames[0][2]:
                raise RuntimeError(f"session {n + 1}: the first decoded frame is not a keyframe")
            await within(viewer.live_keyframe.wait(), GOP_S + 3)
            ttff.append(viewer.ttff_ms())
            waited.append(viewer.wait_keyframe_ms())
            catchup.append(viewer.catchup_frames())
        finally:
            await close_session(bus, session, viewer)
        say(
            f"session {n + 1:2d}: TTFF {ttff[-1]:6.1f} ms, catch-up {catchup[-1]:2d} frames, "
            f"next keyframe at {waited[-1]:6.1f} ms"
        )
    return {"ttff": ttff, "waited": waited, "catchup": catchup}


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


async def cpu_pct(proc: subprocess.Popen[bytes]) -> float:
    c0, t0 = cpu_s(proc.pid), time.monotonic()
    await asyncio.sleep(CPU_WINDOW_S)
    if proc.poll() is not None:
        raise RuntimeError(f"edge-video exited with {proc.returncode} during the CPU window")
    return (cpu_s(proc.pid) - c0) / (time.monotonic() - t0) * 100


async def with_viewers(bus: BusWatcher, proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """edge-video's CPU % with CPU_VIEWERS viewers, and the lowest frame rate one of them got."""
    opened: list[tuple[str, TimedViewer]] = []
    try:
        for n in range(CPU_VIEWERS):
            opened.append(await open_session(bus, f"cpu viewer {n + 1}"))
        await asyncio.sleep(SETTLE_S)
        counts = [len(v.frames) for _, v in opened]
        pct = await cpu_pct(proc)
        fps = min(len(v.frames) - c for (_, v), c in zip(opened, counts, strict=True))
        return pct, fps / CPU_WINDOW_S
    finally:
        for session, viewer in opened:
            await close_session(bus, session, viewer)


async def against_edge_video(
    bus: BusWatcher, proc: subprocess.Popen[bytes], rng: random.Random
) -> dict[str, Any]:
    idle = await cpu_pct(proc)
    say(f"edge-video CPU with 0 viewers: {idle:.1f} % of one core")
    found = await ttff_sessions(bus, rng)
    ttff, waited, catchup = found["ttff"], found["waited"], found["catchup"]
    say(f"TTFF {spread(ttff)}; waiting for the next keyframe: {spread(waited)}")
    busy, fps = await with_viewers(bus, proc)
    say(f"edge-video CPU with {CPU_VIEWERS} viewers: {busy:.1f} % (slowest viewer {fps:.1f} fps)")
    return {
        "ttff_p50_ms": round(percentile(ttff, 50), 1),
        "ttff_p95_ms": round(percentile(ttff, 95), 1),
        "ttff_max_ms": round(max(ttff), 1),
        "ttff_wait_keyframe_p50_ms": round(percentile(waited, 50), 1),
        "ttff_wait_keyframe_p95_ms": round(percentile(waited, 95), 1),
        "ttff_speedup_p50": round(percentile(waited, 50) / percentile(ttff, 50), 2),
        "n_sessions": len(ttff),
        "catchup_frames_min": min(catchup),
        "catchup_frames_max": max(catchup),
        "catchup_frames_mean": round(statistics.fmean(catchup), 1),
        "edge_video_cpu_pct_0_viewers": round(idle, 1),
        f"edge_video_cpu_pct_{CPU_VIEWERS}_viewers": round(busy, 1),
        "edge_video_cpu_pct_per_viewer": round((busy - idle) / CPU_VIEWERS, 2),
        f"viewer_fps_min_{CPU_VIEWERS}_viewers": round(fps, 1),
    }


def wait_ready(proc: subprocess.Popen[bytes], notify: NotifySocket, log_path: Path) -> None:
    """READY=1 within 20 s, or an error with the end of edge-video's log."""
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            notify.wait_for("READY=1", timeout=0.5)
            return
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"edge-video did not become ready; end of {log_path}:\n{tail}")


def read_notify(notify: NotifySocket, done: threading.Event) -> None:
    """Keep reading sd_notify datagrams, as systemd does: libsystemd's sd_notify (used when
    systemd-python is installed) blocks the sender once 10 datagrams wait unread."""
    notify.sock.settimeout(0.5)
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            notify.sock.recv(4096)


@contextlib.contextmanager
def edge_video(root: Path, url: str, log_level: str) -> Iterator[subprocess.Popen[bytes]]:
    site = write_site(root, url, extra=LIVE_TOML)
    (root / "notify.sock").unlink(missing_ok=True)  # left by an earlier run with --keep
    notify = NotifySocket(root / "notify.sock")
    env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_USEC"}
    env["NOTIFY_SOCKET"] = str(notify.path)
    log_path = root / "video.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [EDGE, "run", "video", "--config", str(site), "--log-level", log_level],
            stdout=log,
            stderr=log,
            env=env,
        )
    done = threading.Event()
    reader = threading.Thread(target=read_notify, args=(notify, done), name="notify", daemon=True)
    try:
        wait_ready(proc, notify, log_path)
        reader.start()
        yield proc
    finally:
        stop(proc)
        done.set()
        if reader.is_alive():
            reader.join(2)
        notify.close()


def run(root: Path, seed: int, log_level: str) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "live", "resolution": f"{WIDTH}x{HEIGHT}@{FPS}"}
    out["gop_s"] = GOP_S
    t0 = time.monotonic()
    cpu = cpu_per_frame()
    say(f"cpu per frame measured in {time.monotonic() - t0:.1f} s")
    with contextlib.ExitStack() as stack:
        broker = start_mosquitto(root / "broker")
        stack.callback(broker.stop)
        proc = stack.enter_context(edge_video(root, broker.url, log_level))
        topics = (f"{REPLY_BASE}/#", "edge/up/live/#")
        bus = BusWatcher("127.0.0.1", int(broker.port or 0), topics)
        stack.callback(bus.close)
        time.sleep(WARMUP_S)
        live = asyncio.run(against_edge_video(bus, proc, random.Random(seed)))
    return {**out, **live, **cpu, "seed": seed, **TARGETS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="seed of the pauses between sessions")
    parser.add_argument("--log-level", default="WARNING", help="edge-video's log level")
    parser.add_argument("--keep", metavar="DIR", type=Path, help="work here and keep the logs")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: mosquitto and edge-video are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out = run(root, seed, args.log_level)
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        say("interrupted: mosquitto and edge-video were stopped")
        sys.exit(130)
