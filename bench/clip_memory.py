"""Memory of edge-video's clip writer during a 10-minute alarm (one camera).

A synthetic 1280x720 camera at 15 fps and about 2 Mb/s (the walker scene with sensor noise,
libx264, a keyframe every 2 s, SPS/PPS in front of each): POOL_S seconds of its video are
encoded once, then replayed for as long as the clip needs, each packet a fresh copy of its
bytes with times that go on (a camera hands over new buffers too). The packets go through
the real pre-alarm ring and the real clip writer (:class:`edge.video.clips.ClipSession`),
pushed and fed the way a camera pipeline does, SPEED times faster than real time.

The alarm comes once the ring holds its PRE_S seconds; another alarm every REALARM_S
seconds extends the clip until its 10-minute limit (``MAX_CLIP_S`` after the first alarm)
ends it. RSS and USS (/proc/self/smaps_rollup) are read before the alarm (``start``), at the
highest point while recording (``peak``), one simulated minute into the alarm and after the
last packet, once the writer thread has caught up and before the clip is finished (``end``;
fed faster than real time, the writer may lag behind by up to its backlog bound, reported
as ``writer_backlog_mb_*``); growth = end - start, which counts what
opening a clip costs once (its writer thread, the decoder of the snapshot); growth after the
first minute shows whether memory follows the clip's length. Then the clip is finished
(written for good, snapshot, checksum) and checked with ffprobe when it is installed.

The bench process applies the malloc settings edge-video applies at start (fewer arenas, a
fixed mmap threshold: :mod:`edge.video.lean`); ``--default-malloc`` leaves glibc's defaults,
to see what those settings are worth. Last line: one JSON object.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.video.clips import MAX_CLIP_S, ClipSession  # noqa: E402
from edge.video.frames import EncodedPacket  # noqa: E402
from edge.video.lean import tune_malloc  # noqa: E402
from edge.video.ring import PacketRing  # noqa: E402
from edge.video.sources.scenes import Scene  # noqa: E402

WIDTH, HEIGHT, FPS, GOP_S = 1280, 720, 15, 2
KBPS = 2000
POOL_S = 8  # seconds of video encoded once and replayed
PRE_S, POST_S = 10.0, 10.0
REALARM_S = 5.0  # a zone that keeps tripping: each alarm extends the clip
SPEED = 30.0  # times faster than real time
RING_MAX = 64 * 1024 * 1024
TIME_BASE = Fraction(1, 90_000)
TARGET_GROWTH_MB = 10


def memory_mb() -> tuple[float, float]:
    """(RSS, USS) of this process in MB."""
    rss, uss, _ = memory_fields()
    return rss, uss


def memory_fields() -> tuple[float, float, float]:
    """(RSS, USS, anonymous) in MB. USS also counts library pages no other process maps at
    that moment, so it jumps when other Python processes come and go; anonymous memory
    (heaps, buffers) does not."""
    fields: dict[str, int] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0])
    uss = fields["Private_Clean"] + fields["Private_Dirty"] + fields.get("Private_Hugetlb", 0)
    return fields["Rss"] / 1024, uss / 1024, fields["Anonymous"] / 1024


def encode_pool() -> list[tuple[bytes, bool]]:
    """POOL_S seconds of the synthetic camera: (Annex-B access unit, keyframe), decode order."""
    scene = Scene("walker?start=0&period=4&pause=0", WIDTH, HEIGHT)
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, FPS), Fraction(FPS)
    gop = FPS * GOP_S
    ctx.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "x264-params": f"repeat-headers=1:scenecut=0:keyint={gop}:min-keyint={gop}:"
        f"bitrate={KBPS}:vbv-maxrate={KBPS}:vbv-bufsize={KBPS}",
    }
    pool: list[tuple[bytes, bool]] = []
    for n in range(POOL_S * FPS):
        img = scene.render(n / FPS, n)
        assert img is not None
        frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
        frame.pts = n
        pool.extend((bytes(p), bool(p.is_keyframe)) for p in ctx.encode(frame))
    pool.extend((bytes(p), bool(p.is_keyframe)) for p in ctx.encode(None))
    assert len(pool) == POOL_S * FPS and pool[0][1], "one packet per frame, keyframe first"
    return pool


def camera(pool: list[tuple[bytes, bool]]):  # type: ignore[no-untyped-def]
    """Endless packets of the replayed pool, each with its own copy of the bytes."""
    ticks = int(Fraction(1, FPS) / TIME_BASE)
    n = 0
    while True:
        data, key = pool[n % len(pool)]
        yield EncodedPacket("bench", bytes(bytearray(data)), n * ticks, TIME_BASE, key)
        n += 1


def ffprobe_ok(path: Path) -> bool | None:
    probe = shutil.which("ffprobe")
    if probe is None:
        return None
    done = subprocess.run(
        [probe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode == 0 and done.stderr == ""


def main() -> None:
    tuned = tune_malloc() if "--default-malloc" not in sys.argv[1:] else []
    pool = encode_pool()
    pool_bytes = sum(len(d) for d, _ in pool)
    kbps = pool_bytes * 8 / POOL_S / 1000
    packets = camera(pool)
    ring = PacketRing(PRE_S, RING_MAX)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        pkt = next(packets)
        while pkt.seconds < PRE_S:  # the ring fills before the alarm
            ring.push(pkt)
            pkt = next(packets)
        rss0, uss0, anon0 = memory_fields()
        alarm_s = pkt.seconds
        session = ClipSession("bench", "ev-0", alarm_s, PRE_S, POST_S, ring, out)
        next_alarm, alarms = alarm_s + REALARM_S, 1
        peak_rss, peak_uss = rss0, uss0
        rss_1min: float | None = None
        peak_backlog = 0
        t0 = time.monotonic()
        while True:
            if pkt.seconds >= next_alarm and next_alarm <= alarm_s + MAX_CLIP_S:
                session.extend(next_alarm, f"ev-{alarms}")
                next_alarm, alarms = next_alarm + REALARM_S, alarms + 1
            ring.push(pkt)
            if session.feed(pkt):
                break
            lag = (pkt.seconds - alarm_s) / SPEED - (time.monotonic() - t0)
            if lag > 0:
                time.sleep(lag)
            if int(pkt.seconds * FPS) % FPS == 0:  # once a simulated second
                peak_backlog = max(peak_backlog, session.backlog)
                rss, uss = memory_mb()
                peak_rss, peak_uss = max(peak_rss, rss), max(peak_uss, uss)
                if rss_1min is None and pkt.seconds - alarm_s >= 60:
                    rss_1min = rss
            pkt = next(packets)
        recorded_s = pkt.seconds - alarm_s
        backlog_mb = session.backlog / 1e6
        while session.backlog:  # fed faster than real time: let the writer catch up
            time.sleep(0.01)
        rss1, uss1, anon1 = memory_fields()
        t1 = time.monotonic()
        info = session.finish()
        finish_s = time.monotonic() - t1
        rss2, _ = memory_mb()
        valid = ffprobe_ok(info.path)
        clip_mb = info.bytes / 1e6
    print(
        f"clip of {info.duration_s:.0f} s ({clip_mb:.0f} MB at {kbps:.0f} kb/s): RSS "
        f"{rss0:.1f} -> {rss1:.1f} MB (peak {peak_rss:.1f}), USS {uss0:.1f} -> {uss1:.1f} MB; "
        f"finish {finish_s:.1f} s, RSS after {rss2:.1f} MB",
        file=sys.stderr,
    )
    result = {
        "bench": "clip_memory",
        "clip_s": round(info.duration_s, 1),
        "recorded_s_after_alarm": round(recorded_s, 1),
        "alarms": alarms,
        "clip_mb": round(clip_mb, 1),
        "bitrate_kbps": round(kbps),
        "speed_x_realtime": SPEED,
        "malloc": ", ".join(tuned) or "glibc default",
        "rss_start_mb": round(rss0, 1),
        "rss_end_mb": round(rss1, 1),
        "rss_peak_mb": round(peak_rss, 1),
        "growth_mb": round(rss1 - rss0, 1),
        "peak_growth_mb": round(peak_rss - rss0, 1),
        "growth_after_first_minute_mb": round(rss1 - (rss_1min or rss0), 1),
        "uss_start_mb": round(uss0, 1),
        "uss_end_mb": round(uss1, 1),
        "uss_growth_mb": round(uss1 - uss0, 1),
        "anon_growth_mb": round(anon1 - anon0, 1),
        "rss_after_finish_mb": round(rss2, 1),
        "finish_s": round(finish_s, 2),
        "writer_backlog_mb_at_end": round(backlog_mb, 1),
        "writer_backlog_mb_peak": round(peak_backlog / 1e6, 1),
        "ffprobe_valid": valid,
        "targets": {"growth_mb": TARGET_GROWTH_MB},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
