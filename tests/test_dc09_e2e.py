"""DC-09 end to end: `edge run alarm` with a `[dc09]` section, fed by its outbox, against
pysiaalarm's receiver running in a thread of the test. The input is a simulated pin."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.alarm import NotifySocket, start_alarm, stop, write_site
from support.broker import Broker

pysia = pytest.importorskip("pysiaalarm.aio", reason="pip install pysiaalarm (dev extra)")
from pysiaalarm import SIAAccount, SIAEvent  # noqa: E402

ACCOUNT = "AAA1"
EDGE = str(Path(sys.executable).with_name("edge"))


class ThreadedReceiver:
    """pysiaalarm's asyncio receiver on its own loop in a thread, on a fixed port."""

    def __init__(self, port: int = 0) -> None:
        self.events: queue.Queue[SIAEvent] = queue.Queue()
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: Any = None
        self.start()

    def start(self) -> None:
        async def accepted(event: SIAEvent) -> None:
            self.events.put(event)

        async def up() -> int:
            self.client = pysia.SIAClient("127.0.0.1", self.port, [SIAAccount(ACCOUNT)], accepted)
            await self.client.async_start()
            return int(self.client.server.sockets[0].getsockname()[1])

        self.port = asyncio.run_coroutine_threadsafe(up(), self.loop).result(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client.async_stop(), self.loop).result(5)

    def next(self, timeout: float = 10) -> SIAEvent:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Dc09Site:
    def __init__(self, tmp: Path, broker: Broker) -> None:
        self.receiver = ThreadedReceiver()
        dc09 = (
            f'\n[dc09]\naccount = "{ACCOUNT}"\nack_timeout_s = 1\nretries = 0\n'
            f'poll_interval_s = 10\nprimary = {{ host = "127.0.0.1", port = '
            f"{self.receiver.port} }}\n"
            "\n[outbox]\nbackoff_min_s = 1\nbackoff_max_s = 10\n"
        )
        self.site = write_site(tmp, broker.url, swinger=20, extra=dc09)
        self.notify = NotifySocket(tmp / "notify.sock")
        self.proc = start_alarm(self.site, tmp, self.notify)
        self.notify.wait_for("READY=1")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [EDGE, *args, "--config", str(self.site)], capture_output=True, text=True, timeout=20
        )

    def received(self, code: str, timeout: float = 15) -> SIAEvent:
        deadline = time.monotonic() + timeout
        while True:
            ev = self.receiver.next(max(0.1, deadline - time.monotonic()))
            if ev.code == code:
                return ev

    def journal_kinds(self) -> list[str]:
        out = self.cli("events", "--json", "--limit", "1000").stdout
        return [json.loads(line)["kind"] for line in out.splitlines() if line.strip()]

    def close(self) -> None:
        stop(self.proc)
        self.notify.close()
        self.receiver.close()


@pytest.fixture
def dc09_site(tmp_path: Path, broker: Broker) -> Iterator[Dc09Site]:
    s = Dc09Site(tmp_path, broker)
    yield s
    s.close()


def test_trip_reaches_the_receiver_with_account_code_and_zone_number(dc09_site: Dc09Site) -> None:
    assert dc09_site.cli("sim", "trip", "panic").returncode == 0
    ev = dc09_site.received("PA")
    assert ev.account == ACCOUNT
    assert (int(ev.ri), int(ev.message)) == (1, 4)  # area 1; panic is the 4th zone
    deadline = time.monotonic() + 10
    while True:
        status = json.loads(dc09_site.cli("panel", "status", "--json").stdout)
        if status["outbox"]["dc09"]["depth"] == 0:
            break
        assert time.monotonic() < deadline, status["outbox"]
        time.sleep(0.2)


def test_receiver_down_gives_a_path_event_and_the_alarm_arrives_later(
    dc09_site: Dc09Site,
) -> None:
    dc09_site.received("RR")  # the service start, delivered
    dc09_site.receiver.stop()
    assert dc09_site.cli("sim", "trip", "lid").returncode == 0
    deadline = time.monotonic() + 15
    while "receiver_path_fail" not in dc09_site.journal_kinds():
        assert time.monotonic() < deadline, dc09_site.journal_kinds()
        time.sleep(0.3)
    dc09_site.receiver.start()  # same port
    ev = dc09_site.received("TA", timeout=30)
    assert int(ev.message) == 5  # the lid, 5th zone
    deadline = time.monotonic() + 15
    while "receiver_path_restore" not in dc09_site.journal_kinds():
        assert time.monotonic() < deadline
        time.sleep(0.3)
