"""`edge demo` (what `make demo` runs) on a copy of the demo site: it creates the bus
identities, starts the authenticated broker, edge-alarm and edge-video, takes commands from
another terminal, and stops every child when it is told to stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.broker import free_port

REPO = Path(__file__).resolve().parents[1]
EDGE = str(Path(sys.executable).with_name("edge"))


def demo_site(tmp: Path) -> Path:
    """hw-sim/sites/demo.toml with this test's ports and directories."""
    text = (REPO / "hw-sim/sites/demo.toml").read_text()
    bus_port, web_port = free_port(), free_port()
    for old, new in (
        ('"../../.demo/data"', f'"{tmp / "data"}"'),
        ('"../../.demo/run"', f'"{tmp / "run"}"'),
        ('"../../.demo/secrets/bus"', f'"{tmp / "ids"}"'),
        ('"../../.demo/web-users"', f'"{tmp / "web-users"}"'),
        ("mqtt://127.0.0.1:18830", f"mqtt://127.0.0.1:{bus_port}"),
        ("port = 8080", f"port = {web_port}"),
    ):
        assert old in text, f"the demo site no longer has {old}: update this test"
        text = text.replace(old, new)
    path = tmp / "demo.toml"
    path.write_text(text)
    return path


def edge(*args: str, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EDGE, *args, "--config", str(site)], capture_output=True, text=True, timeout=30
    )


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_demo_runs_takes_commands_and_stops_its_children(tmp_path: Path) -> None:
    site = demo_site(tmp_path)
    log = open(tmp_path / "demo.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [EDGE, "demo", "--no-follow", "--config", str(site)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 40
        while "Live view" not in (tmp_path / "demo.log").read_text():
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()
            time.sleep(0.2)
        kids = children(proc.pid)
        assert len(kids) == 3  # broker, edge-alarm, edge-video
        assert (tmp_path / "ids" / "installer").exists()
        out = edge("sim", "trip", "lid", site=site)
        assert out.returncode == 0, out.stderr
        out = edge("panel", "arm", site=site)
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 10
        while True:
            rows = edge("events", "--json", site=site).stdout.splitlines()
            kinds = {json.loads(r)["kind"]: json.loads(r) for r in rows if r.strip()}
            if "tamper" in kinds and "exit_delay" in kinds:
                break
            assert time.monotonic() < deadline, sorted(kinds)
            time.sleep(0.3)
        assert kinds["exit_delay"]["details"]["user"] == "installer"
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        time.sleep(0.5)
        alive = [k for k in kids if os.path.exists(f"/proc/{k}")]
        assert not alive, f"children left running: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for k in children(proc.pid):
            os.kill(k, signal.SIGKILL)
        log.close()
