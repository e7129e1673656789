"""DC-09 faults end to end: `edge run alarm` as a subprocess against pysiaalarm's receiver.

- A receiver outage (stopped, so connections are refused) while zones go into alarm and back:
  the backlog reaches the receiver within seconds of its return, in journal order, with no
  restore ahead of its alarm. The outage is 20 s instead of the 3 and 10 minutes of the fault
  runs: the old per-event retry times (5 s doubling, the outbox defaults kept here) already
  reach 20 s by then, and the box's probe interval stops growing at 3 s after ~7 s of outage.
- A black-holed receiver (accepts TCP, never answers) for longer than the DC-09 loop's
  watchdog limit (30 s): systemd's watchdog keeps getting WATCHDOG=1, edge-alarm starts once,
  and the dead path is journaled as a path fault.
- SIGKILL and restart, three times, with events in flight: the DC-09 sequence numbers the
  receiver sees keep increasing across the restarts; none is used twice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import signal
import socket
import socketserver
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.alarm import REPO, BusWatcher, NotifySocket, stop, write_site
from support.broker import Broker

pysia = pytest.importorskip("pysiaalarm.aio", reason="pip install pysiaalarm (dev extra)")
from pysiaalarm import SIAAccount, SIAEvent  # noqa: E402

from edge.events import Event  # noqa: E402
from edge.journal import JOURNAL_FILE, Journal  # noqa: E402
from edge.uplink.dc09_sequence import BLOCK  # noqa: E402
from edge.uplink.outbox import outbox_path  # noqa: E402

ACCOUNT = "AAA1"
ZONE_NUMBERS = {"door": 1, "hall": 2, "office": 3, "panic": 4, "lid": 5}
RESTORES = {"PR": "PA", "TR": "TA"}
WATCHDOG_LIMIT_S = 30.0  # max_silence of the "dc09" loop (edge/uplink/runtime.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """pysiaalarm on a fixed port, in a thread; ``got`` holds (arrival, event) of what it took."""

    def __init__(self) -> None:
        self.port = free_port()
        self.got: queue.Queue[tuple[float, SIAEvent]] = queue.Queue()
        self.seen: list[tuple[float, SIAEvent]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: Any = None

    def start(self) -> None:
        async def accepted(event: SIAEvent) -> None:
            self.got.put((time.monotonic(), event))

        async def up() -> None:
            self.client = pysia.SIAClient("127.0.0.1", self.port, [SIAAccount(ACCOUNT)], accepted)
            await self.client.async_start()

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(5)

    def stop(self) -> None:
        if self.client is not None:
            asyncio.run_coroutine_threadsafe(self.client.async_stop(), self.loop).result(5)
            self.client = None

    def take(self, timeout: float = 0.0) -> None:
        """Move what arrived into ``seen``, waiting up to ``timeout`` for the first item."""
        try:
            self.seen.append(self.got.get(timeout=timeout) if timeout else self.got.get_nowait())
            while True:
                self.seen.append(self.got.get_nowait())
        except queue.Empty:
            pass

    def events(self, after: float = 0.0) -> list[tuple[str, int]]:
        """(code, zone) of the events (not NULL polls) that arrived after ``after``."""
        self.take()
        return [(str(e.code), int(e.message or 0)) for at, e in self.seen
                if at > after and e.code != "RP"]  # fmt: skip

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class BlackHole(socketserver.ThreadingTCPServer):
    """Accepts every connection and reads it, never answering."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.connections = 0
        outer = self

        class Swallow(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                while self.request.recv(1024):
                    pass

        super().__init__(("127.0.0.1", 0), Swallow)
        self.port = int(self.server_address[1])
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class Box:
    """One site: edge-alarm (restartable on the same data), its bus, its notify socket."""

    def __init__(self, tmp: Path, broker: Broker, receiver_port: int, watchdog_usec: int = 0):
        dc09 = (
            f'\n[dc09]\naccount = "{ACCOUNT}"\nack_timeout_s = 2\nretries = 2\n'
            f'poll_interval_s = 10\nprimary = {{ host = "127.0.0.1", port = {receiver_port} }}\n'
        )
        self.tmp = tmp
        self.site = write_site(tmp, broker.url, swinger=20, extra=dc09)
        self.data = tmp / "data"
        self.notify = NotifySocket(tmp / "notify.sock")
        self.watchdog_usec = watchdog_usec
        self.bus = BusWatcher("127.0.0.1", int(broker.port or 0), topics=())
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        edge = Path(sys.executable).with_name("edge")
        log = open(self.tmp / "alarm.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(edge), "run", "alarm", "--config", str(self.site)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )  # fmt: skip
        log.close()
        self.notify.wait_for("READY=1", timeout=20)
        return self.proc

    def pairs(self, zones: tuple[str, ...], count: int, gap_s: float = 0.12) -> None:
        """``count`` trip / restore pairs, cycling over ``zones``, through the simulator."""
        for _, zone in zip(range(count), itertools.cycle(zones), strict=False):
            for word in ("trip", "restore"):
                self.bus.publish(f"edge/sim/zones/{zone}/set", word)
                time.sleep(gap_s)

    def journal(self) -> list[Event]:
        with Journal(self.data / JOURNAL_FILE, readonly=True) as journal:
            return journal.since(0, 10_000)

    def owed(self) -> int:
        db = sqlite3.connect(f"file:{outbox_path(self.data)}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT COUNT(*) FROM pending WHERE transport = 'dc09'")
                       .fetchone()[0])  # fmt: skip
        finally:
            db.close()

    def log(self) -> str:
        return (self.tmp / "alarm.log").read_text(errors="replace")

    def close(self) -> None:
        stop(self.proc)
        self.bus.close()
        self.notify.close()


def expected(events: list[Event], after_seq: int) -> list[tuple[str, int]]:
    """(code, zone) of the journal events after ``after_seq`` that DC-09 carries, in order."""
    return [(str(e.kind.spec.sia), ZONE_NUMBERS.get(e.zone_id or "", 0)) for e in events
            if e.seq > after_seq and e.kind.spec.transmit and e.kind.spec.sia]  # fmt: skip


def reversed_pairs(received: list[tuple[str, int]]) -> int:
    waiting: dict[tuple[str, int], int] = {}
    count = 0
    for code, zone in received:
        if code in RESTORES.values():
            waiting[(code, zone)] = waiting.get((code, zone), 0) + 1
        elif code in RESTORES:
            key = (RESTORES[code], zone)
            count += waiting.get(key, 0) == 0
            waiting[key] = max(0, waiting.get(key, 0) - 1)
    return count


def wait(condition: Any, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return time.monotonic()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.close()


def test_after_an_outage_the_backlog_arrives_at_once_in_journal_order(
    tmp_path: Path, broker: Broker, receiver: Receiver
) -> None:
    box = Box(tmp_path, broker, receiver.port)
    try:
        wait(lambda: ("RR", 0) in receiver.events(), 15, "service start delivered")
        receiver.stop()
        down = time.monotonic()
        before = max(e.seq for e in box.journal() if e.kind.value == "service_started")
        box.pairs(("panic", "lid"), 16)
        wait(lambda: "receiver_path_fail" in [e.kind.value for e in box.journal()], 20,
             "path fault journaled")  # fmt: skip
        time.sleep(max(0.0, down + 20 - time.monotonic()))  # a 20 s outage
        owed = expected(box.journal(), before)
        back = time.monotonic()
        receiver.start()
        wait(lambda: ("YK", 0) in receiver.events(back) and box.owed() == 0, 20,
             f"backlog of {len(owed)} delivered")  # fmt: skip
        got, since_down = receiver.events(back), receiver.events(down)
        slipped = since_down[: len(since_down) - len(got)]
        # What the closing connection still took just after the stop, then the backlog in
        # journal order, then the path restore journaled when the first probe got through.
        assert slipped + got[:-1] == owed, (slipped, got)
        assert got[-1] == ("YK", 0) and len(slipped) <= 1
        assert len(owed) == 33 and reversed_pairs(since_down) == 0  # 32 edges + path fault
        last = max(at for at, e in receiver.seen if e.code == "YK")
        assert last - back < 8, f"backlog arrived {last - back:.1f} s after the receiver's return"
    finally:
        box.close()


def test_a_black_holed_receiver_is_a_path_fault_not_a_restart(
    tmp_path: Path, broker: Broker
) -> None:
    hole = BlackHole()
    box = Box(tmp_path, broker, hole.port, watchdog_usec=2_000_000)  # a ping every second
    try:
        box.pairs(("panic", "lid"), 10)  # a backlog the old loop sat on for minutes
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            box.notify.wait_for("never", timeout=WATCHDOG_LIMIT_S + 12)
        pings = [at for at, text in box.notify.messages if at >= start and "WATCHDOG=1" in text]
        gaps = [b - a for a, b in itertools.pairwise([start, *pings, time.monotonic()])]
        readies = [text for _, text in box.notify.messages if "READY=1" in text]
        assert box.proc.poll() is None and len(readies) == 1
        assert len(pings) >= WATCHDOG_LIMIT_S and max(gaps) < 3, gaps
        assert "withholding WATCHDOG=1" not in box.log()
        faults = [e for e in box.journal() if e.kind.value == "receiver_path_fail"]
        assert len(faults) == 1 and "no answer" in faults[0].details["reason"], faults
        journaled = expected(box.journal(), 0)  # service start, the edges, the path fault
        assert box.owed() == len(journaled) >= 20  # all still owed: nothing lost or skipped
        # One full send (3 tries), then one try per probe: ≥ 2 s timeout + ≤ 3 s pause each.
        assert hole.connections <= 3 + (WATCHDOG_LIMIT_S + 12) / 2, hole.connections
    finally:
        box.close()
        hole.close()


def test_sequence_numbers_continue_across_sigkill_and_restart(
    tmp_path: Path, broker: Broker, receiver: Receiver
) -> None:
    box = Box(tmp_path, broker, receiver.port)
    runs: list[float] = []  # when each new process took over
    try:
        wait(lambda: ("RR", 0) in receiver.events(), 15, "service start delivered")
        for _ in range(3):
            box.pairs(("panic",), 3, gap_s=0.05)
            time.sleep(0.3)  # some delivered, some maybe in flight
            box.proc.send_signal(signal.SIGKILL)
            box.proc.wait(5)
            runs.append(time.monotonic())
            box.start()
        starts = lambda: receiver.events().count(("RR", 0))  # noqa: E731
        wait(lambda: starts() == 4 and box.owed() == 0, 30, "everything delivered")
        receiver.take(timeout=0.5)
        numbers = [(at, int(e.sequence or 0)) for at, e in receiver.seen]
        seqs = [n for _, n in numbers]
        assert len(set(seqs)) == len(seqs) and seqs == sorted(seqs), seqs  # no reuse, ever
        for killed in runs:
            last = max(n for at, n in numbers if at < killed)
            first = min(n for at, n in numbers if at > killed)
            assert 0 < first - last <= BLOCK, (last, first)  # a restart skips one block at most
        # Every journaled alarm arrived; one in flight at a kill may arrive twice (resent
        # under a new number: its first copy's ACK died with the process).
        journaled = sum(e.kind.value == "panic" for e in box.journal())
        arrived = sum(code == "PA" for code, _ in receiver.events())
        assert journaled >= 6 and journaled <= arrived <= journaled + len(runs)
    finally:
        box.close()
