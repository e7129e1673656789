"""A full data disk must not turn the site off (fault-tolerance issue 10).

The data directory of a real `edge run alarm` is a small tmpfs (a loop-mounted ext4 image where
tmpfs cannot be mounted) that the test fills with a plain file while zones trip. edge-alarm runs
under tests/support/restarter.py with the restart rules of systemd/edge-alarm.service, sends
over SIA DC-09 to pysiaalarm's receiver and over MQTT, through the box broker's bridge, to a
central broker whose console acknowledges every event, as a central station does.

The run: a trip with room on the disk; the disk filled (the reserve gives the journal room);
two trips; the disk filled again by another writer (no room at all); edge-alarm killed and
restarted by the restarter on the full disk; two more trips (held in memory); the space freed.
Every trip of the full period must reach the receiver and the central station, and once space
is back everything must be in the journal, its chain intact, without anyone acting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.alarm import NotifySocket, start_alarm, write_site
from support.central import Peer, central_section, console, start_box, start_central
from support.pki import make_pki
from support.restarter import Restarter, UnitRules, parse_span
from support.site import toml_table
from support.small_disk import SmallDisk, small_disk

pysia = pytest.importorskip("pysiaalarm.aio", reason="pip install pysiaalarm (dev extra)")
from pysiaalarm import SIAAccount, SIAEvent  # noqa: E402

from edge.sqlite_wal import WAL_LIMIT_BYTES  # noqa: E402

SITE = "site-a"
ACCOUNT = "BEE1"
EDGE = str(Path(sys.executable).with_name("edge"))
UNIT = Path(__file__).resolve().parents[1] / "systemd" / "edge-alarm.service"
DISK_BYTES = 8 * 1024 * 1024
# Extra panic zones, one per trip, so each alarm is known by its zone number at the receiver.
PANIC_PINS = {"p1": 6, "p2": 12, "p3": 13, "p4": 16}
FIRST_EXTRA_ZONE = 6  # door, hall, office, panic, lid come first in the test site


def panic_zones() -> str:
    return "".join(
        f'\n[[zones]]\nid = "{zone}"\ntype = "panic"\n'
        f'input = {{ kind = "gpio", pin = {pin}, contact = "no", debounce_ms = 20 }}\n'
        for zone, pin in PANIC_PINS.items()
    )


class Receiver:
    """pysiaalarm's receiver on its own event loop in a thread; keeps what it accepted."""

    def __init__(self) -> None:
        self.events: queue.Queue[SIAEvent] = queue.Queue()
        self.seen: list[SIAEvent] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def accepted(event: SIAEvent) -> None:
            self.events.put(event)

        async def up() -> int:
            self.client = pysia.SIAClient("127.0.0.1", 0, [SIAAccount(ACCOUNT)], accepted)
            await self.client.async_start()
            return int(self.client.server.sockets[0].getsockname()[1])

        self.port = asyncio.run_coroutine_threadsafe(up(), self.loop).result(5)

    def codes(self) -> set[tuple[str, str]]:
        """(SIA code, zone number as sent) of everything accepted so far."""
        while not self.events.empty():
            self.seen.append(self.events.get_nowait())
        return {(e.code, str(int(e.message)) if (e.message or "").isdigit() else "")
                for e in self.seen if e.code}  # fmt: skip

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client.async_stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Station:
    """The central station: records every event it receives and acknowledges it."""

    peer: Peer
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    heartbeats: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Station:
        self.peer.subscribe(f"sites/{SITE}/#")
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.peer.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if msg.topic == f"sites/{SITE}/heartbeat":
                self.heartbeats += 1
            elif msg.topic == f"sites/{SITE}/events":
                body = json.loads(msg.payload)
                self.events[body["id"]] = body
                ack = json.dumps({"v": 1, "id": body["id"]})
                self.peer.client.publish(f"sites/{SITE}/ack", ack, qos=1)

    def kinds(self) -> set[tuple[str, str | None]]:
        return {(e["kind"], e.get("zone")) for e in list(self.events.values())}

    def close(self) -> None:
        self._stop.set()
        self.peer.close()


class WalSampler:
    """The largest size each write-ahead log reached, sampled every 20 ms."""

    def __init__(self, data: Path) -> None:
        self.files = {name: data / f"{name}.db-wal" for name in ("journal", "outbox")}
        self.largest = dict.fromkeys(self.files, 0)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for name, path in self.files.items():
                with contextlib.suppress(OSError):  # not there between checkpoints
                    self.largest[name] = max(self.largest[name], path.stat().st_size)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)


def until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


@dataclass
class Box:
    site: Path
    disk: SmallDisk
    unit: Restarter
    notify: NotifySocket
    receiver: Receiver
    station: Station

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [EDGE, *args, "--config", str(self.site)], capture_output=True, text=True, timeout=20
        )

    def trip(self, zone: str) -> None:
        for how in ("trip", "restore"):
            out = self.cli("sim", how, zone)
            assert out.returncode == 0, out.stderr

    def status(self) -> dict[str, Any]:
        out = self.cli("panel", "status", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def journal(self) -> list[dict[str, Any]]:
        out = self.cli("events", "--json", "--limit", "1000")
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def ready(self, timeout: float = 15.0) -> float:
        return self.notify.wait_for("READY=1", timeout=timeout)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    pki = make_pki(tmp_path / "pki", (SITE,))
    central = start_central(tmp_path / "central", pki)
    cleanup: list[Callable[[], Any]] = [central.stop]
    try:
        section = central_section(pki, SITE, int(central.port or 0))
        broker = start_box(tmp_path / "box", SITE, section)
        cleanup.append(broker.stop)
        receiver = Receiver()
        cleanup.append(receiver.close)
        extra = toml_table("central", section.model_dump())
        extra += toml_table("outbox", {"backoff_min_s": 1, "backoff_max_s": 10})
        extra += toml_table("heartbeat", {"interval_s": 10})
        extra += toml_table(
            "dc09",
            {"account": ACCOUNT, "ack_timeout_s": 1, "retries": 0, "poll_interval_s": 10},
        )
        extra += f'primary = {{ host = "127.0.0.1", port = {receiver.port} }}\n'
        extra += panic_zones()
        workdir = tmp_path / "alarm"
        site = write_site(
            workdir, broker.url, swinger=20, extra=extra, site_id=SITE,
            identities=broker.identities,
        )  # fmt: skip
        with small_disk(workdir / "data", DISK_BYTES) as disk:
            station = Station(console(central, pki)).start()
            cleanup.append(station.close)
            notify = NotifySocket(tmp_path / "notify.sock")
            cleanup.append(notify.close)
            rules = UnitRules.from_file(UNIT)
            unit = Restarter(rules, lambda: start_alarm(site, workdir, notify)).start()
            try:
                yield Box(site, disk, unit, notify, receiver, station)
            finally:
                unit.stop()
    finally:
        for step in reversed(cleanup):
            step()


def test_a_full_data_disk_loses_no_alarm_and_recovers_by_itself(box: Box) -> None:
    figures: dict[str, Any] = {"disk": box.disk.kind}
    box.ready()
    until("first heartbeat at the central", lambda: box.station.heartbeats)
    wal = WalSampler(box.disk.path)
    try:
        box.trip("panic")  # room on the disk: the paths work
        until("panic at the receiver", lambda: ("PA", "4") in box.receiver.codes())

        started = time.monotonic()
        box.disk.fill()
        figures["fill_s"] = round(time.monotonic() - started, 2)
        for zone in ("p1", "p2"):  # the reserve gives the journal room
            box.trip(zone)
        until("disk_full reported", lambda: box.status()["disk"]["state"] == "full")
        box.disk.fill()  # another writer takes what the reserve gave back: no room at all

        killed = time.monotonic()
        box.unit.kill(signal.SIGKILL)  # a crash on the full disk: restarted, must come up
        box.unit.wait_starts(2, timeout=15)
        figures["restart_ready_s"] = round(box.ready() - killed, 2)
        assert box.cli("panel", "arm").returncode == 0  # its state file cannot be written
        box.trip("office")  # a burglary while set: the siren rule still acts
        siren = box.status()["outputs"]["siren"]
        assert siren["on"], siren
        for zone in ("p3", "p4"):
            box.trip(zone)
        assert box.cli("panel", "disarm").returncode == 0

        status = box.status()
        assert status["disk"]["state"] == "full" and status["disk"]["held"]["journal"] > 0
        assert not status["disk"]["reserve"]
        summary = box.cli("panel", "status").stdout
        assert "data disk: FULL" in summary and "held in memory" in summary, summary

        trips = list(PANIC_PINS)
        numbers = {z: str(FIRST_EXTRA_ZONE + i) for i, z in enumerate(trips)}
        wanted = {(code, numbers[z]) for z in trips for code in ("PA", "PR")}
        wanted |= {("BA", "3"), ("BR", "3"), ("CL", "0"), ("OP", "0")}  # office, arm, disarm
        until("every trip at the receiver", lambda: wanted <= box.receiver.codes())
        at_central = {(kind, z) for z in trips for kind in ("panic", "panic_restore")}
        at_central |= {("burglary", "office"), ("armed", None), ("disarmed", None)}
        until("every trip at the central", lambda: at_central <= box.station.kinds())
        tripped = [*trips, "office"]  # the alarms of the full period, by zone
        figures["trips_while_full"] = len(tripped)
        sia_zones = {n for code, n in box.receiver.codes() if code in ("PA", "BA")}
        figures["at_receiver"] = len({*numbers.values(), "3"} & sia_zones)
        central_zones = {z for kind, z in box.station.kinds() if kind in ("panic", "burglary")}
        figures["at_central"] = len(set(tripped) & central_zones)

        freed = time.monotonic()
        box.disk.release()

        def recovered() -> bool:
            disk = box.status()["disk"]
            return disk["state"] == "ok" and not any(disk["held"].values()) and disk["reserve"]

        until("recovery once space is back", recovered)
        figures["recovery_s"] = round(time.monotonic() - freed, 2)
        saved = json.loads((box.disk.path / "panel-state.json").read_text())
        assert saved["partitions"] == {"main": None}, saved  # disarmed: written once space was back
    finally:
        wal.close()
    figures["wal_max_bytes"] = wal.largest

    verify = box.cli("events", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    journal = box.journal()
    kinds = [e["kind"] for e in journal]
    assert "disk_full" in kinds and kinds[-1] == "disk_full_restore"  # nothing after it yet
    assert kinds.count("service_started") == 2
    by_zone = {e["zone"]: e for e in journal if e["kind"] == "panic"}
    for zone in trips:  # journaled, with the id and hash the central station received
        sent = box.station.events[by_zone[zone]["id"]]
        assert (sent["seq"], sent["hash"]) == (by_zone[zone]["seq"], by_zone[zone]["hash"])
    sia = lambda: {code for code, _ in box.receiver.codes()}  # noqa: E731
    until("fault and restore at the receiver", lambda: {"YX", "YZ"} <= sia())
    both = {("disk_full", None), ("disk_full_restore", None)}
    until("fault and restore at the central", lambda: both <= box.station.kinds())
    assert box.unit.state == "running" and len(box.unit.starts) == 2
    assert [code for _, code in box.unit.exits] == [-signal.SIGKILL]
    for name, largest in wal.largest.items():
        assert largest <= WAL_LIMIT_BYTES + 128 * 1024, (name, largest)
    print("figures:", json.dumps(figures))


# -- the restarter applies a unit's rules as systemd does ------------------------------------
def unit_file(tmp_path: Path, unit: str, service: str) -> UnitRules:
    path = tmp_path / "test.service"
    path.write_text(f"[Unit]\n{unit}\n[Service]\nExecStart=/bin/true\n{service}\n")
    return UnitRules.from_file(path)


def exiting(code: int) -> Callable[[], subprocess.Popen[bytes]]:
    return lambda: subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


def test_a_start_limit_leaves_a_failing_service_dead(tmp_path: Path) -> None:
    """What the shipped units did before: a burst of failed starts, then nothing, for ever."""
    rules = unit_file(tmp_path, "StartLimitIntervalSec=30\nStartLimitBurst=3",
                      "Restart=always\nRestartSec=50ms")  # fmt: skip
    with Restarter(rules, exiting(70)) as unit:
        unit.wait_state("failed", timeout=10)
        assert len(unit.starts) == 3 and [c for _, c in unit.exits] == [70, 70, 70]


def test_without_a_start_limit_a_failing_service_is_retried_for_ever(tmp_path: Path) -> None:
    rules = unit_file(tmp_path, "StartLimitIntervalSec=0", "Restart=always\nRestartSec=50ms")
    with Restarter(rules, exiting(70)) as unit:
        unit.wait_starts(8, timeout=15)
        assert unit.state != "failed"
    assert unit.state == "stopped"


def test_restart_rules_follow_systemd(tmp_path: Path) -> None:
    rules = unit_file(tmp_path, "", "Restart=on-failure\nRestartPreventExitStatus=78 SIGUSR1")
    assert (rules.start_limit_interval, rules.start_limit_burst, rules.restart_sec) == (10, 5, 0.1)
    assert rules.restarts_after(70) and rules.restarts_after(-signal.SIGKILL)
    assert not rules.restarts_after(0) and not rules.restarts_after(-signal.SIGTERM)
    assert not rules.restarts_after(78) and not rules.restarts_after(-signal.SIGUSR1)
    with Restarter(rules, exiting(78)) as unit:
        unit.wait_state("failed", timeout=10)
        assert len(unit.starts) == 1
    assert [parse_span(t) for t in ("2s", "1min 30s", "500ms", "5", "1h")] == [2, 90, 0.5, 5, 3600]
    with pytest.raises(ValueError, match="time span"):
        parse_span("soon")
