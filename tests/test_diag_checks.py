"""`edge diag` on a running site driven into faults for real, one site shared by the module.

The site: a central mosquitto with TLS, the box broker as `edge run broker` generates it
(bridge over mutual TLS), `edge run alarm` with a pysiaalarm DC-09 receiver, `edge run
video` with two synthetic cameras — "yard" (a person walks by) and "lens" (covered 4 s after
it starts, for good) — and the data directory on a small tmpfs. The box broker's log is where
`edge demo` puts it (run_dir/mosquitto.log), so `edge diag` can read why the bridge is down.

Faults: a loop set out of band with `edge sim set`, the covered camera, the test PKI's site
certificate (30 days of life: under the 30-day warning), the DC-09 receiver stopped, the
central broker stopped, a site whose expired certificate the central refuses, the data disk
filled, edge-video stopped, edge-alarm stopped. The tests run in order: each one leaves the
site more broken than it found it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.alarm import stop, write_site
from support.central import central_section, start_box, start_central
from support.diag import Diag, diag, text, until
from support.site import SITE, Site, toml_table
from test_dc09_e2e import ACCOUNT, ThreadedReceiver

DISK_MB = 64
CAMERAS = """
[[video.cameras]]
id = "yard"
source = "synthetic"
url = "walker?start=1&period=6"
width = 320
height = 240
fps = 5
gop_s = 1

[[video.cameras]]
id = "lens"
source = "synthetic"
url = "covered?at=4&for=0"
width = 320
height = 240
fps = 5
gop_s = 1

[[video.cameras]]
id = "still"
source = "file"
url = "{still}"
health = {{ frozen_s = 2 }}

[video.clips]
pre_s = 2
post_s = 2
"""


def still_video(path: Path, seconds: int = 600, fps: int = 2) -> Path:
    """A camera stuck on one picture: an H.264 file of identical frames (lossless, so every
    decoded frame is the same), played in real time by edge-video's file source."""
    import av
    import numpy as np

    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
    stream.options = {"preset": "ultrafast", "qp": "0", "x264-params": "keyint=4:scenecut=0"}
    y, x = np.mgrid[0:120, 0:160]
    rgb = np.stack([(x + y) % 200 + 30, (2 * x) % 180 + 40, (3 * y) % 160 + 50], -1)
    frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
    frame = frame.reformat(format="yuv420p")
    for n in range(seconds * fps):
        frame.pts = n
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return path


class Box:
    """The shared site and what the tests do to it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "alarm" / "data"
        self.data.mkdir(parents=True)
        self.tmpfs = _mount_tmpfs(self.data, DISK_MB)
        self.receiver = ThreadedReceiver()
        dc09 = (
            f'\n[dc09]\naccount = "{ACCOUNT}"\nack_timeout_s = 1\nretries = 0\n'
            f'poll_interval_s = 10\nprimary = {{ host = "127.0.0.1", port = '
            f"{self.receiver.port} }}\n"
        )
        cameras = CAMERAS.format(still=still_video(tmp / "still.mp4"))
        self.site = Site(tmp, extra=dc09 + cameras)
        self.config = self.site.site
        run = tmp / "alarm" / "run"
        (run / "mosquitto.log").symlink_to(self.site.box.log_path)
        self.site.start_video()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.site.cli(*args)

    def close(self) -> None:
        self.site.close()
        self.receiver.close()
        if self.tmpfs:
            for _ in range(50):
                if subprocess.run(["umount", str(self.data)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["umount", "-l", str(self.data)], capture_output=True)


def _mount_tmpfs(path: Path, size_mb: int) -> bool:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0750", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    b = Box(tmp_path_factory.mktemp("diag-site"))
    try:
        yield b
    finally:
        b.close()


def ok_or_unknown(d: Diag, check: str, scope: str = "box") -> bool:
    return d.status(check, scope) in ("ok", "unknown")


def test_a_loop_out_of_band_and_a_covered_camera_are_named_with_their_remedy(box: Box) -> None:
    assert box.cli("sim", "set", "hall", "2000").returncode == 0
    started = time.monotonic()
    got = until(
        box.config,
        lambda d: (
            d.status("zone.loop", "hall") == "fail" and d.status("camera.health", "lens") == "fail"
        ),
        25,
    )
    print(f"loop fault named {time.monotonic() - started:.1f} s after it was set")
    assert got.rc == 2
    hall = got.finding("zone.loop", "hall")
    assert "loop out of band (reads 2000 Ω; normal is 4230–5170 Ω)" in hall["summary"]
    assert "measure the loop" in hall["remedy"]
    assert hall["arming"] is True
    assert hall["evidence"]["bands"]["alarm"] == [8460, 10340]
    lens = got.finding("camera.health", "lens")
    assert "covered" in lens["summary"] and "uncover it" in lens["remedy"]
    still = got.finding("camera.health", "still")
    assert "picture frozen" in still["summary"] and "power cycle" in still["remedy"]
    # The rest of the site is healthy, and says so in figures.
    assert got.status("camera.health", "yard") == "ok"
    assert got.status("camera.video", "yard") == "ok"
    assert got.status("zone.loop", "door") == "ok"
    assert got.finding("zone.loop", "door")["summary"] == "zone door (Front door): normal"
    for check, scope in (("central.link", "box"), ("central.bridge", "box"),
                         ("dc09.path", "primary"), ("outbox.backlog", "mqtt"),
                         ("outbox.backlog", "dc09"), ("output.readback", "siren"),
                         ("journal.integrity", "box"), ("tls.certificates", "central-ca"),
                         ("service.restarts", "edge-alarm")):  # fmt: skip
        assert got.status(check, scope) == "ok", got.brief()
    # edge-alarm publishes when the broker last took its heartbeat (every 10 s here).
    beat = got.finding("central.heartbeat")
    assert beat["status"] == "ok" and "last heartbeat" in beat["summary"], beat
    # The test PKI's site certificate lives 30 days: inside the 30-day warning.
    cert = got.finding("tls.certificates", "central-site")
    assert cert["status"] == "warn" and "expires on" in cert["summary"]
    # The same, as a maintainer reads it: worst first, each with what to do.
    out = text(box.config)
    lines = out.stdout.splitlines()
    fails = [n for n, line in enumerate(lines) if line.startswith("FAIL")]
    warns = [n for n, line in enumerate(lines) if line.startswith("WARN")]
    assert fails and warns and max(fails) < min(warns), out.stdout
    assert any("zone.loop [hall]" in line for line in lines), out.stdout
    # Fixed: it looks fixed at once (no hold-off on the way back).
    assert box.cli("sim", "restore", "hall").returncode == 0
    back = until(box.config, lambda d: d.status("zone.loop", "hall") == "ok", 5, "zone.loop")
    assert "reads 4" in back.finding("zone.loop", "hall")["summary"]  # ~4700 Ω


def test_paths_down_full_disk_and_stopped_video_are_named_within_their_hold_offs(
    box: Box, tmp_path: Path
) -> None:
    # A second box whose site certificate expired: the central broker refuses it.
    with refused_box(box, tmp_path) as other:
        box.receiver.stop()
        assert box.cli("sim", "trip", "panic").returncode == 0  # something for DC-09 to send
        box.site.central.stop()
        filled = fill(box.data) if box.tmpfs else 0
        assert box.site.video is not None
        stop(box.site.video)
        started = time.monotonic()

        def everything(d: Diag) -> bool:
            wanted = [
                d.status("dc09.path", "primary") == "fail",
                d.status("central.link") == "fail",
                d.status("central.bridge") == "fail",
                d.status("service.video") == "fail",
            ]
            if box.tmpfs:
                wanted.append(d.status("system.disk") == "fail")
            # The other box is watched at the same pace: its hold-off runs meanwhile.
            seen["refused"] = diag(other, "central.bridge")
            return all(wanted) and seen["refused"].status("central.bridge") == "fail"

        seen: dict[str, Diag] = {}
        got = until(box.config, everything, 100, every=2)
        took = time.monotonic() - started
        refused = seen["refused"]
    print(f"faults named after {took:.0f} s; disk filled with {filled / 2**20:.0f} MB")
    assert got.rc == 2
    path = got.finding("dc09.path", "primary")
    assert "does not take messages" in path["summary"]
    assert "no alarm receiver path works" in path["summary"]
    assert "call the monitoring station" in path["remedy"] and path["arming"] is True
    assert path["evidence"]["from"] == "the journal"  # edge-alarm publishes no path state yet
    bridge = got.finding("central.bridge")
    assert "cannot be reached" in bridge["summary"], bridge
    assert "check the box's network" in bridge["remedy"]
    assert bridge["evidence"]["from"].endswith("mosquitto.log")
    why = refused.finding("central.bridge")
    assert "refuses the TLS connection" in why["summary"], why
    assert "certificate" in why["remedy"]
    if box.tmpfs:
        disk = got.finding("system.disk")
        assert "MB of 64 MB" in disk["summary"] and "du -sh" in disk["remedy"]
    # Without edge-video its cameras cannot be judged: unknown, never a false "ok".
    for cam in ("yard", "lens", "still"):
        assert got.status("camera.health", cam) == "unknown"
        assert "edge-video is not running" in got.finding("camera.video", cam)["summary"]
    # The events the panic raised wait in the outbox, counted per path.
    assert got.finding("outbox.backlog", "dc09")["evidence"]["depth"] >= 1

    # The receiver is back: the next message it takes restores the path, at once.
    box.receiver.start()
    if box.tmpfs:
        (box.data / "filler").unlink()
    assert box.cli("sim", "restore", "panic").returncode == 0
    back = until(box.config, lambda d: d.status("dc09.path", "primary") == "ok", 30, "dc09.path")
    assert "no failure reported" in back.finding("dc09.path", "primary")["summary"]
    if box.tmpfs:  # space back; a 64 MB disk stays under the 500 MB warning
        assert diag(box.config, "system.disk").status("system.disk") == "warn"


def test_a_stopped_edge_alarm_is_not_judged_by_the_status_it_left_behind(box: Box) -> None:
    # Its status stays retained on the box broker; its journal says it stopped.
    stop(box.site.proc)
    got = diag(box.config)
    assert got.status("service.alarm") == "fail", got.brief()
    assert "edge-alarm stopped" in got.finding("service.alarm")["summary"]
    for zone in ("door", "hall"):
        found = got.finding("zone.loop", zone)
        assert found["status"] == "unknown" and "edge-alarm is stopped" in found["summary"]
    restarts = got.finding("service.restarts", "edge-alarm")
    assert restarts["status"] == "ok" and "(SIGTERM)" in restarts["summary"], restarts


@contextlib.contextmanager
def refused_box(box: Box, tmp: Path) -> Iterator[Path]:
    """A box broker whose bridge presents an expired site certificate to its own central
    broker; yields the site file `edge diag` reads it with."""
    pki = box.site.pki
    central = start_central(tmp / "central", pki)
    section = central_section(pki, SITE, int(central.port or 0), cert_file=pki.expired.cert.name,
                              key_file=pki.expired.key.name)  # fmt: skip
    other = start_box(tmp / "box", SITE, section)
    try:
        site = write_site(
            tmp / "site",
            other.url,
            extra=toml_table("central", section.model_dump()),
            site_id=SITE,
            identities=other.identities,
        )
        (tmp / "site" / "run" / "mosquitto.log").symlink_to(other.log_path)
        yield site
    finally:
        other.stop()
        central.stop()


def fill(path: Path) -> int:
    """Write a plain file until the kernel says "No space left on device"."""
    written = 0
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 512):
            block = b"\0" * size
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written
