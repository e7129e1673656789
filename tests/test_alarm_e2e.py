"""End to end: a real mosquitto, `edge run alarm` as a subprocess on a simulated site, and the
CLI a user types. Hardware is simulated only at the pin / ADC boundary inside edge-alarm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.alarm import BusWatcher, NotifySocket, start_alarm, stop, write_site
from support.broker import Broker, start_mosquitto

EDGE = str(Path(sys.executable).with_name("edge"))


def edge(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGE, *args], capture_output=True, text=True, timeout=timeout)


class Box:
    def __init__(self, tmp: Path, broker: Broker) -> None:
        self.tmp, self.broker = tmp, broker
        self.site = write_site(tmp, broker.url)
        self.notify = NotifySocket(tmp / "notify.sock")
        self.watch = BusWatcher("127.0.0.1", int(broker.port or 0))
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        proc = start_alarm(self.site, self.tmp, self.notify)
        self.notify.wait_for("READY=1", timeout=10)
        self.watch.wait("edge/alarm/status", timeout=10)
        return proc

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return edge(*args, "--config", str(self.site))

    def journal(self) -> list[dict[str, object]]:
        out = self.cli("events", "--json", "--limit", "1000")
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def close(self) -> None:
        self.watch.close()
        stop(self.proc)
        self.notify.close()


@pytest.fixture
def box(tmp_path: Path, broker: Broker) -> Iterator[Box]:
    b = Box(tmp_path, broker)
    yield b
    b.close()


def test_trip_reaches_bus_and_journal_with_codes(box: Box) -> None:
    out = box.cli("sim", "trip", "panic")
    assert out.returncode == 0, out.stderr
    ev = box.watch.wait("edge/events", kind="panic").json()
    assert (ev["sia"], ev["cid"], ev["zone"], ev["zone_name"]) == (
        "PA",
        120,
        "panic",
        "Panic button",
    )
    assert any(row["id"] == ev["id"] and row["kind"] == "panic" for row in box.journal())
    # The zone's state is retained: a new subscriber gets the latest one at once.
    late = BusWatcher("127.0.0.1", int(box.broker.port or 0), ("edge/zones/panic/state",))
    try:
        deadline = time.monotonic() + 5
        while (state := late.wait("edge/zones/panic/state").json())["loop"] != "alarm":
            assert time.monotonic() < deadline, state
    finally:
        late.close()
    assert state["v"] == 1 and state["alarm_memory"]
    assert box.cli("sim", "restore", "panic").returncode == 0
    restore = box.watch.wait("edge/events", kind="panic_restore").json()
    assert restore["seq"] > ev["seq"]
    verify = box.cli("events", "verify")
    assert verify.returncode == 0 and "OK" in verify.stdout


def test_tamper_reported_while_disarmed(box: Box) -> None:
    assert box.cli("sim", "trip", "lid").returncode == 0
    ev = box.watch.wait("edge/events", kind="tamper").json()
    assert (ev["sia"], ev["cid"], ev["zone"]) == ("TA", 137, "lid")


def test_armed_burglary_then_confirmation_and_siren(box: Box) -> None:
    arm = box.cli("panel", "arm")
    assert arm.returncode == 0, arm.stderr
    box.watch.wait("edge/events", kind="armed")
    # Supervised DEOL loop: EOL + alarm resistor → alarm.
    assert box.cli("sim", "set", "hall", "9400").returncode == 0
    first = box.watch.wait("edge/events", kind="burglary").json()
    assert (first["sia"], first["cid"], first["confirmed"]) == ("BA", 130, False)
    assert first["details"]["ohms"] == pytest.approx(9400, rel=0.02)
    siren = box.watch.wait("edge/events", kind="output_on").json()
    assert siren["details"]["output"] == "siren" and siren["seq"] > first["seq"]
    assert box.cli("sim", "trip", "office").returncode == 0
    second = box.watch.wait("edge/events", kind="burglary_confirmed").json()
    assert (second["sia"], second["cid"], second["confirmed"]) == ("BV", 139, True)
    assert second["details"]["first_zone"] == "hall"
    status = json.loads(box.cli("panel", "status", "--json").stdout)
    assert status["outputs"]["siren"]["on"] is True


def test_arming_refused_names_open_zone(box: Box) -> None:
    assert box.cli("sim", "trip", "office").returncode == 0
    out = box.cli("panel", "arm")
    assert out.returncode == 1
    assert "office" in out.stderr


def test_loop_between_bands_is_a_fault(box: Box) -> None:
    assert box.cli("sim", "set", "hall", "2000").returncode == 0
    ev = box.watch.wait("edge/events", kind="loop_fault").json()
    assert (ev["sia"], ev["cid"], ev["zone"]) == ("BT", 380, "hall")


def test_sigkill_restart_keeps_arming_and_every_event(box: Box) -> None:
    arm = box.cli("panel", "arm")
    assert (arm.returncode, arm.stdout.strip()) == (0, "partition main: armed full")
    box.watch.wait("edge/events", kind="armed")
    assert box.cli("sim", "trip", "office").returncode == 0
    summary = box.cli("panel", "status").stdout
    assert "partition main: alarm" in summary and "zone office: loop alarm" in summary
    alarm = box.watch.wait("edge/events", kind="burglary").json()
    box.proc.send_signal(signal.SIGKILL)
    box.proc.wait()
    box.proc = box.start()
    status = json.loads(box.cli("panel", "status", "--json").stdout)
    assert status["panel"]["partitions"]["main"]["state"] in ("armed_full", "alarm")
    ids = {row["id"] for row in box.journal()}
    assert alarm["id"] in ids
    assert box.cli("events", "verify").returncode == 0


def test_event_during_broker_outage_is_published_after(tmp_path: Path) -> None:
    """The entry delay expires while the broker is down: the alarm is journaled at once and
    reaches the bus when the broker is back (a subscriber with a persistent session on a
    persistent broker sees it whenever edge-alarm reconnects)."""
    store = tmp_path / "store"
    store.mkdir()
    broker = start_mosquitto(
        tmp_path / "broker", extra_conf=f"persistence true\npersistence_location {store}/\n"
    )
    box = Box(tmp_path, broker)
    try:
        port = int(broker.port or 0)
        box.watch.close()
        box.watch = BusWatcher("127.0.0.1", port, ("edge/events",), session="outage-watch")
        assert box.cli("panel", "arm").returncode == 0
        box.watch.wait("edge/events", kind="armed")
        assert box.cli("sim", "trip", "door").returncode == 0
        box.watch.wait("edge/events", kind="entry_delay")
        box.watch.client.disconnect()
        box.watch.client.loop_stop()
        broker.stop()
        deadline = time.monotonic() + 10
        while not any(r["kind"] == "burglary" for r in box.journal()):
            assert time.monotonic() < deadline, "entry delay expiry not journaled"
            time.sleep(0.2)
        broker.restart()
        box.watch = BusWatcher("127.0.0.1", port, ("edge/events",), session="outage-watch")
        ev = box.watch.wait("edge/events", timeout=20, kind="burglary").json()
        assert ev["zone"] == "door"
    finally:
        box.close()
        broker.stop()


def test_bad_config_exits_78_with_the_reason(tmp_path: Path, broker: Broker) -> None:
    site = write_site(tmp_path, broker.url)
    site.write_text(site.read_text().replace("pin = 22", "pin = 17"))
    out = edge("run", "alarm", "--config", str(site))
    assert out.returncode == 78
    assert "GPIO 17 is used by zone 'door' and zone 'office'" in out.stderr
    assert "Traceback" not in out.stderr
    check = edge("config", "check", str(site))
    assert check.returncode == 78 and "GPIO 17" in check.stderr


def test_alarm_service_imports_no_video_library() -> None:
    code = (
        "import sys, edge.cli, edge.alarm.service, edge.commands.run;"
        "bad = {'numpy', 'av', 'aiortc', 'picamera2'} & set(sys.modules);"
        "print(sorted(bad)); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert out.returncode == 0, out.stdout


def test_alarm_service_runs_without_openssl(box: Box) -> None:
    """edge-alarm speaks no TLS; OpenSSL would cost ~4.5 MB of its 40 MB budget."""
    maps = Path(f"/proc/{box.proc.pid}/maps").read_text()
    assert "libssl" not in maps and "libcrypto" not in maps
    assert box.cli("events", "verify").returncode == 0  # built-in SHA-256, same chain


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_alarm_service_says_so_retained(box: Box, how: signal.Signals) -> None:
    """A clean stop publishes it; a crash leaves it to the broker (the will): either way a
    reader that comes later sees at once that edge-alarm is not running."""
    up = box.watch.wait("edge/alarm/status").json()
    assert up["running"] is True and up["ts"].endswith("+00:00")
    box.proc.send_signal(how)
    box.proc.wait(10)
    late = BusWatcher("127.0.0.1", int(box.broker.port or 0), ("edge/alarm/status",))
    try:
        deadline = time.monotonic() + 10  # a killed client's will follows its keepalive
        while True:
            msg = late.wait("edge/alarm/status", timeout=max(0.1, deadline - time.monotonic()))
            if msg.json().get("running") is False:
                break
        assert msg.retain or how == signal.SIGKILL
    finally:
        late.close()
