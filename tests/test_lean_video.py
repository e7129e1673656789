"""edge-video loads only what the site uses: no WebRTC, X.509 or DNS stack until a live session.

The real `edge run video` (its CLI entry point, in a child process that reports its modules
when it exits) runs two synthetic cameras until READY=1 and a few seconds more. Two checks:
the shared objects it maps while running (/proc/<pid>/maps: extension modules show there) and
the modules it imported by the time it stopped (sys.modules). Live view off: none of aiortc,
aiohttp, cryptography, pyOpenSSL, pylibsrtp, aioice, dnspython. Live view on with the local
web server (the box as shipped; its certificate made beforehand by `edge web cert`, as the
unit does): aiohttp serves the page, the WebRTC stack still waits for a first session.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.alarm import NotifySocket, stop, write_site
from support.broker import Broker, free_port

EDGE = str(Path(sys.executable).with_name("edge"))
LIVE_STACK = ("aiortc", "aioice", "pylibsrtp", "cryptography", "OpenSSL", "dns")
SHARED_OBJECTS = ("/aiortc/", "/pylibsrtp/", "/cryptography/", "/aiohttp/")

CAMERAS = """
[[video.cameras]]
id = "yard"
source = "synthetic"
url = "walker"
width = 320
height = 240
fps = 10
gop_s = 1

[[video.cameras]]
id = "gate"
source = "synthetic"
url = "walker?seed=2"
width = 320
height = 240
fps = 10
gop_s = 1
"""

# The CLI entry point the `edge` script calls, then the modules it left loaded.
DRIVER = """
import json, sys
from edge.cli import main
code = main(["run", "video", "--config", sys.argv[1]])
loaded = sorted(name for name, module in sys.modules.items() if module is not None)
with open(sys.argv[2], "w", encoding="utf-8") as out:
    json.dump(loaded, out)
sys.exit(code)
"""


def run_video(site: Path, work: Path, web_port: int = 0) -> tuple[set[str], set[str]]:
    """Run edge-video to READY=1 and 3 s more; (shared objects mapped, top-level packages).
    ``web_port``: the local web server must accept a connection there meanwhile."""
    notify = NotifySocket(work / "notify.sock")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["NOTIFY_SOCKET"] = str(notify.path)
    modules = work / "modules.json"
    with open(work / "video.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(site), str(modules)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        notify.wait_for("READY=1", timeout=20)
        time.sleep(3.0)  # cameras, clips ring, publisher, live loops all running
        if web_port:
            socket.create_connection(("127.0.0.1", web_port), timeout=5).close()
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        mapped = {line.split()[-1] for line in maps.splitlines() if ".so" in line}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, (work / "video.log").read_text()[-3000:]
    finally:
        stop(proc)
        notify.close()
    loaded = json.loads(modules.read_text(encoding="utf-8"))
    return mapped, {name.split(".")[0] for name in loaded}


def offenders(mapped: set[str], packages: set[str], forbidden: tuple[str, ...]) -> list[str]:
    found = sorted(p for p in packages if p in forbidden)
    found += sorted(m for m in mapped if any(part in m for part in SHARED_OBJECTS))
    return found


def test_video_without_live_view_loads_no_live_stack(broker: Broker, tmp_path: Path) -> None:
    extra = CAMERAS + "\n[live]\nenabled = false\n"
    site = write_site(tmp_path, broker.url, extra=extra)
    mapped, packages = run_video(site, tmp_path)
    assert any("/av.libs/" in m or "/av/" in m for m in mapped), "maps must show extensions"
    assert {"av", "numpy", "paho"} <= packages
    assert offenders(mapped, packages, (*LIVE_STACK, "aiohttp")) == []


@pytest.mark.parametrize("https", [True, False])
def test_live_view_on_loads_webrtc_only_for_a_session(
    broker: Broker, tmp_path: Path, https: bool
) -> None:
    port = free_port()
    web = (
        f'\n[web]\nlisten = "127.0.0.1"\nport = {port}\nhttps = {str(https).lower()}\n'
        f'credentials_file = "{tmp_path / "secrets" / "web-users"}"\n'
    )
    site = write_site(tmp_path, broker.url, extra=CAMERAS + web)
    if https:  # as the unit does before the first start (ExecStartPre=+edge web cert)
        made = subprocess.run(
            [EDGE, "web", "cert", "--config", str(site)], capture_output=True, text=True
        )
        assert made.returncode == 0, made.stderr
    mapped, packages = run_video(site, tmp_path, web_port=port)
    assert "aiohttp" in packages, "the local web server runs"
    assert any("/aiohttp/" in m for m in mapped)
    assert offenders(mapped - {m for m in mapped if "/aiohttp/" in m}, packages, LIVE_STACK) == []


def test_malloc_settings_leave_a_site_choice_alone() -> None:
    """edge-video sets glibc's arena count and mmap threshold, unless the unit's environment
    already chose them."""
    code = "from edge.video.lean import tune_malloc; print(' '.join(tune_malloc()))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert default.stdout.split() == ["MALLOC_ARENA_MAX=2", "MALLOC_MMAP_THRESHOLD_=262144"]
    env["MALLOC_ARENA_MAX"] = "4"
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert chosen.stdout.split() == ["MALLOC_MMAP_THRESHOLD_=262144"]
