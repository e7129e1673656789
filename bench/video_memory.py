"""Resident memory and CPU of `edge run video` with two synthetic 720p cameras.

Two cameras at 1280x720, 15 fps, 10 s of pre-alarm video in each ring, paced in real time,
measured over MEASURE_S after WARMUP_S: RSS, USS and anonymous memory from
/proc/<pid>/smaps_rollup (the highest sample of each), CPU from /proc/<pid>/stat (utime +
stime deltas). RSS counts every resident page mapped, shared library pages included, and
how many of those are mapped depends on the page cache. USS (Private_Clean + Private_Dirty)
counts the pages no other process maps: the heaps, plus the library pages of numpy and
PyAV while no other process has them loaded (on a box: always), so on a busy development
machine it moves by 10-40 MB as other Python processes come and go. Anonymous memory
(heaps and buffers) moves with neither and is the figure to compare between runs.

The site is the box as shipped: live view on (nobody watching) and the local web server on
(a free loopback port, its own users file and certificate in the bench's directory, never
/etc/edge nor 0.0.0.0:8080; the certificate is made by `edge web cert` beforehand, as the
unit does). It is run again with live view off (no live stack at all).

The synthetic camera renders its pictures and ENCODES them with libx264 inside edge-video,
which a real camera does not ask of us (it hands over H.264). So the same run is repeated
for the references, in this one command:

- the same cameras with motion analysis disabled (health stays on): what motion costs;
- the two synthetic sources alone in a bare process (render + encode, no pipeline);
- in-process, per frame: scene rendering vs libx264 encoding, to split the source's cost;
- a bare Python that imports numpy and av: the memory floor of any video process.

`pipeline_cpu_pct_per_camera` (edge-video minus the sources alone) and
`pipeline_rss_mb_estimate` (edge-video minus what the sources alone add to the numpy + av
floor) are what a box with real cameras (passed-through H.264) would pay, give or take the
decoder of the analysis stream. Last line: one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, NotifySocket, start_mosquitto, stop, write_site

CAMERAS = 2
WIDTH, HEIGHT, FPS = 1280, 720, 15
PRE_S = 10
WARMUP_S = 5.0
MEASURE_S = 20.0
TICK = os.sysconf("SC_CLK_TCK")
EDGE = str(Path(sys.executable).with_name("edge"))


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, USS) of a process in MB, from /proc/<pid>/smaps_rollup (Linux 4.14+)."""
    rss, uss, _ = memory_fields(pid)
    return rss, uss


def memory_fields(pid: int) -> tuple[float, float, float]:
    """(RSS, USS, anonymous) in MB. Anonymous memory (heaps, buffers) is what neither the
    page cache nor other processes mapping the same libraries move."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0])  # kB
    uss = fields["Private_Clean"] + fields["Private_Dirty"] + fields.get("Private_Hugetlb", 0)
    return fields["Rss"] / 1024, uss / 1024, fields["Anonymous"] / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def live_toml(work: Path, live: bool) -> str:
    """Live view and the local web server as shipped (on), or live view off."""
    if not live:
        return "\n[live]\nenabled = false\n\n[web]\nenabled = false\n"
    return f"""
[web]
listen = "127.0.0.1"
port = {free_port()}
credentials_file = "{work / "secrets" / "web-users"}"
"""


def cameras_toml(motion: bool) -> str:
    cams = "".join(
        f"""
[[video.cameras]]
id = "cam{i}"
source = "synthetic"
url = "walker?seed={i + 1}"
width = {WIDTH}
height = {HEIGHT}
fps = {FPS}
gop_s = 2
motion = {{ enabled = {str(motion).lower()} }}
"""
        for i in range(CAMERAS)
    )
    return cams + f"\n[video.clips]\npre_s = {PRE_S}\npost_s = 10\n"


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


class Run:
    """What one measured process used: highest RSS, USS and anonymous (MB), CPU % of a core."""

    def __init__(self, rss: float, uss: float, anon: float, cpu: float) -> None:
        self.rss, self.uss, self.anon, self.cpu = rss, uss, anon, cpu


def measure(proc: subprocess.Popen[bytes]) -> Run:
    """Highest RSS and USS, and CPU, over MEASURE_S after WARMUP_S."""
    time.sleep(WARMUP_S)
    c0, t0 = cpu_s(proc.pid), time.monotonic()
    rss = uss = anon = 0.0
    while time.monotonic() - t0 < MEASURE_S:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}")
        r, u, a = memory_fields(proc.pid)
        rss, uss, anon = max(rss, r), max(uss, u), max(anon, a)
        time.sleep(0.5)
    cpu = (cpu_s(proc.pid) - c0) / (time.monotonic() - t0) * 100
    return Run(rss, uss, anon, cpu)


def run_video(root: Path, url: str, *, motion: bool = True, live: bool = True) -> Run:
    work = root / f"motion-{motion}-live-{live}"
    work.mkdir()
    site = write_site(work, url, extra=cameras_toml(motion) + live_toml(work, live))
    if live:  # the page's certificate, made before the first start as the unit does
        subprocess.run(
            [EDGE, "web", "cert", "--config", str(site)], check=True, capture_output=True
        )
    notify = NotifySocket(work / "notify.sock")
    env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_USEC"}
    env["NOTIFY_SOCKET"] = str(notify.path)
    with open(work / "video.log", "ab") as log:
        proc = subprocess.Popen(
            [EDGE, "run", "video", "--config", str(site)], stdout=log, stderr=log, env=env
        )
    try:
        notify.wait_for("READY=1", timeout=20)
        return measure(proc)
    finally:
        stop(proc)
        notify.close()


def run_sources_alone() -> Run:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--sources-only", str(WARMUP_S + MEASURE_S + 5)], cwd=REPO
    )
    try:
        return measure(proc)
    finally:
        stop(proc)


async def drain_sources(seconds: float) -> None:
    """The bare process: two synthetic sources whose items are read and dropped (with the
    malloc setting edge-video applies at start)."""
    from edge.config.video import Camera
    from edge.video.lean import tune_malloc

    tune_malloc()
    from edge.video.sources import open_source

    cams = [
        Camera(id=f"cam{i}", source="synthetic", url=f"walker?seed={i + 1}", width=WIDTH,
               height=HEIGHT, fps=FPS, gop_s=2)
        for i in range(CAMERAS)
    ]  # fmt: skip
    sources = [open_source(c) for c in cams]

    async def drain(src: object) -> None:
        async for _ in src.packets():  # type: ignore[attr-defined]
            pass

    tasks = [asyncio.create_task(drain(s)) for s in sources]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s in sources:
        await s.close()  # type: ignore[attr-defined]


def split_source_cost(frames: int = 90) -> tuple[float, float]:
    """CPU ms per frame of rendering the scene and of encoding it (one 720p camera)."""
    from edge.video.sources.scenes import Scene
    from edge.video.sources.synthetic import FrameEncoder

    scene = Scene("walker", WIDTH, HEIGHT)
    encoder = FrameEncoder("bench", WIDTH, HEIGHT, FPS, 2.0, hardware=False)
    imgs = []
    t0 = time.process_time()
    for n in range(frames):
        img = scene.render(n / FPS, n)
        assert img is not None
        imgs.append(img)
    t1 = time.process_time()
    for n, img in enumerate(imgs):
        encoder.encode(img, n)
    encoder.flush()
    t2 = time.process_time()
    return (t1 - t0) / frames * 1000, (t2 - t1) / frames * 1000


def imports_floor() -> tuple[float, float]:
    """(RSS, USS) of a bare Python that imported numpy and av."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import numpy, av, time; time.sleep(5)"], cwd=REPO
    )
    try:
        time.sleep(3.0)
        return memory_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = start_mosquitto(root / "broker")
        try:
            box = run_video(root, broker.url)
            no_motion = run_video(root, broker.url, motion=False)
            no_live = run_video(root, broker.url, live=False)
        finally:
            broker.stop()
    src = run_sources_alone()
    render_ms, encode_ms = split_source_cost()
    base_rss, base_uss = imports_floor()
    print(
        f"edge-video: RSS {box.rss:.1f} MB, USS {box.uss:.1f} MB, CPU {box.cpu:.1f} %; "
        f"live view off: {no_live.rss:.1f} / {no_live.uss:.1f} MB; without motion: "
        f"{no_motion.rss:.1f} MB, {no_motion.cpu:.1f} %; sources alone: {src.rss:.1f} MB, "
        f"{src.cpu:.1f} %; per frame: render {render_ms:.2f} ms, encode {encode_ms:.2f} ms; "
        f"numpy+av floor {base_rss:.1f} / {base_uss:.1f} MB",
        file=sys.stderr,
    )
    out = {
        "bench": "video_memory",
        "rss_mb": round(box.rss, 1),
        "uss_mb": round(box.uss, 1),
        "anon_mb": round(box.anon, 1),
        "cpu_pct_per_camera": round(box.cpu / CAMERAS, 1),
        "cameras": CAMERAS,
        "resolution": f"{WIDTH}x{HEIGHT}@{FPS}",
        "pre_s": PRE_S,
        "rss_mb_live_off": round(no_live.rss, 1),
        "uss_mb_live_off": round(no_live.uss, 1),
        "anon_mb_live_off": round(no_live.anon, 1),
        "rss_mb_without_motion": round(no_motion.rss, 1),
        "cpu_pct_per_camera_without_motion": round(no_motion.cpu / CAMERAS, 1),
        "motion_cpu_pct_per_camera": round((box.cpu - no_motion.cpu) / CAMERAS, 1),
        "source_alone_rss_mb": round(src.rss, 1),
        "source_alone_uss_mb": round(src.uss, 1),
        "source_alone_cpu_pct_per_camera": round(src.cpu / CAMERAS, 1),
        "render_cpu_pct_per_camera": round(render_ms * FPS / 10, 1),
        "encode_cpu_pct_per_camera": round(encode_ms * FPS / 10, 1),
        "pipeline_cpu_pct_per_camera": round((box.cpu - src.cpu) / CAMERAS, 1),
        "numpy_av_floor_rss_mb": round(base_rss, 1),
        "numpy_av_floor_uss_mb": round(base_uss, 1),
        "pipeline_rss_mb_estimate": round(box.rss - src.rss + base_rss, 1),
        "pipeline_uss_mb_estimate": round(box.uss - src.uss + base_uss, 1),
        "rss_ratio_to_floor": round(box.rss / base_rss, 2),
        "targets": {"rss_mb": 130, "uss_mb": 90},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sources-only"]:
        asyncio.run(drain_sources(float(sys.argv[2])))
    else:
        main()
