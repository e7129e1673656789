"""The DC-09 feed in one process: real journal, outbox, transmitter and pysiaalarm receiver.

What the service does after a receiver outage, on a black-holed receiver and with a DUH,
measured on the feed's own loop (the subprocess versions are in test_fault_dc09_outage.py).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pysia = pytest.importorskip("pysiaalarm.aio", reason="pip install pysiaalarm (dev extra)")
from pysiaalarm import SIAAccount, SIAEvent  # noqa: E402
from pysiaalarm.data.data import SIA_CODES  # noqa: E402

from edge.config.dc09 import Dc09Config  # noqa: E402
from edge.config.site import SiteConfig  # noqa: E402
from edge.events import Event, Kind  # noqa: E402
from edge.journal import Journal  # noqa: E402
from edge.uplink.dc09 import Dc09Transmitter  # noqa: E402
from edge.uplink.dc09_feed import PROBE_MAX_S, TRANSPORT, Dc09Feed  # noqa: E402
from edge.uplink.dc09_payload import Numbering  # noqa: E402
from edge.uplink.outbox import Outbox, outbox_path  # noqa: E402

ACCOUNT = "1234"
ZONES = ("door", "hall", "shed")
PAIRS = {Kind.BURGLARY: Kind.BURGLARY_RESTORE, Kind.TAMPER: Kind.TAMPER_RESTORE}


def site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "t-site"},
            "partitions": [{"id": "main"}],
            "zones": [
                {"id": z, "type": "instant", "input": {"kind": "gpio", "pin": 4 + i}}
                for i, z in enumerate(ZONES)
            ],
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rig:
    """Journal → outbox → feed → transmitter → ``port``; ``got`` is what the receiver took."""

    def __init__(self, tmp: Path, port: int, **dc09: Any) -> None:
        self.port = port
        cfg = Dc09Config.model_validate(
            {"account": ACCOUNT, "primary": {"host": "127.0.0.1", "port": port}, **dc09}
        )
        self.numbers = Numbering(cfg, site())
        self.journal = Journal(tmp / "journal.db")
        self.outbox = Outbox(outbox_path(tmp), [TRANSPORT])
        self.beats: list[float] = []
        self.tx = Dc09Transmitter(cfg, site(), self._path_changed, sequence_file=tmp / "dc09.seq")
        self.feed = Dc09Feed(
            transmitter=self.tx,
            journal=self.journal,
            outbox=self.outbox,
            journal_event=self.append,
            beat=lambda _name: self.beats.append(time.monotonic()),
        )
        self.got: list[tuple[float, SIAEvent]] = []
        self.client: Any = None

    def _path_changed(self, path: str, up: bool) -> None:
        self.feed.path_changed(path, up)

    def append(self, event: Event) -> None:
        self.journal.append(event)
        self.feed.notify()

    async def receiver_up(self) -> None:
        async def accepted(event: SIAEvent) -> None:
            self.got.append((time.monotonic(), event))

        self.client = pysia.SIAClient("127.0.0.1", self.port, [SIAAccount(ACCOUNT)], accepted)
        await self.client.async_start()

    async def receiver_down(self) -> None:
        await self.client.async_stop()

    def expected(self, since_seq: int = 0) -> list[tuple[str, int]]:
        """(SIA code, zone number) of every journal event after ``since_seq``, in order."""
        events = self.journal.since(since_seq, 10_000)
        return [
            (e.kind.spec.sia, self.numbers.zone(e.zone_id))
            for e in events
            if e.kind.spec.transmit and e.kind.spec.sia
        ]

    def received(self) -> list[tuple[str, int]]:
        return [(str(e.code), int(e.message or 0)) for _, e in self.got if e.code != "RP"]

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.journal.since(0, 10_000)]

    async def wait_for(self, condition: Any, timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)
        return time.monotonic()

    def max_beat_gap(self, since: float) -> float:
        stamps = [since, *(b for b in self.beats if b >= since), time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(stamps))


@asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[Rig]:
    tasks = [asyncio.create_task(rig.feed.run()), asyncio.create_task(rig.feed.run_supervision())]
    try:
        yield rig
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await rig.tx.close()
        if rig.client is not None:
            await rig.client.async_stop()
        rig.outbox.close()
        rig.journal.close()


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def trip_pairs(rig: Rig, count: int) -> None:
    """``count`` alarm / restore pairs, cycling over the zones and two kinds."""
    for i in range(count):
        alarm = (Kind.BURGLARY, Kind.TAMPER)[i % 2]
        zone = ZONES[i % len(ZONES)]
        rig.append(Event(alarm, zone_id=zone))
        rig.append(Event(PAIRS[alarm], zone_id=zone))


def reversed_pairs(received: list[tuple[str, int]]) -> int:
    """Restores that arrived while their zone's last alarm of that kind had not."""
    restores = {"BR": "BA", "TR": "TA"}
    open_alarms: dict[tuple[str, int], int] = {}
    reversed_count = 0
    for code, zone in received:
        if code in restores.values():
            open_alarms[(code, zone)] = open_alarms.get((code, zone), 0) + 1
        elif code in restores:
            key = (restores[code], zone)
            if open_alarms.get(key, 0) == 0:
                reversed_count += 1
            else:
                open_alarms[key] -= 1
    return reversed_count


def test_after_an_outage_the_backlog_leaves_at_once_in_journal_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(Rig(tmp_path, free_port(), ack_timeout_s=1)) as rig:
            await rig.receiver_up()
            rig.append(Event(Kind.SERVICE_STARTED))
            await rig.wait_for(lambda: rig.received() == [("RR", 0)], 10, "RR delivered")
            await rig.receiver_down()
            first = rig.journal.last_seq()
            trip_pairs(rig, 30)  # blocks this loop for 60 journal commits: beats count after
            tripped = time.monotonic()
            await rig.wait_for(lambda: "receiver_path_fail" in rig.kinds(), 20, "path fault")
            await asyncio.sleep(2 * PROBE_MAX_S)  # the probes reach their longest interval
            since = len(rig.got)
            backlog = rig.outbox.depth(TRANSPORT)
            back = time.monotonic()
            await rig.receiver_up()
            done = await rig.wait_for(
                lambda: rig.outbox.depth(TRANSPORT) == 0 and "receiver_path_restore" in rig.kinds()
                and len(rig.received()) - 1 == len(rig.expected(first)),
                15, "the backlog drained",
            )  # fmt: skip
            got = rig.received()[1:]
            assert got == rig.expected(first)  # journal order, path fault and restore included
            assert reversed_pairs(got) == 0
            # 30 pairs and the path fault; the first alarm may still slip through the
            # connection pysiaalarm keeps serving for a moment after it stops listening.
            assert backlog in (60, 61) and len(rig.got) - since == backlog + 1  # + restore
            assert done - back < PROBE_MAX_S + 2, f"drained {done - back:.1f} s after the return"
            assert rig.got[since][0] - back < PROBE_MAX_S + 1  # the first one went at once
            assert rig.max_beat_gap(tripped) < 1.5

    run(scenario())


def test_a_black_holed_receiver_is_a_path_fault_and_the_loop_keeps_beating(
    tmp_path: Path,
) -> None:
    connections: list[float] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(time.monotonic())
        while await reader.read(1024):
            pass
        writer.close()

    async def scenario() -> None:
        hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = int(hole.sockets[0].getsockname()[1])
        try:
            async with running(Rig(tmp_path, port, ack_timeout_s=1, retries=2)) as rig:
                rig.append(Event(Kind.SERVICE_STARTED))
                trip_pairs(rig, 5)
                start = time.monotonic()
                await asyncio.sleep(8)
                assert rig.max_beat_gap(start) < 1.5  # the watchdog sees a live loop
                faults = [e for e in rig.journal.since(0, 100) if e.kind is Kind.RECEIVER_PATH_FAIL]
                assert len(faults) == 1 and "no answer" in faults[0].details["reason"]
                assert rig.outbox.depth(TRANSPORT) == 12  # nothing lost, nothing overtaken
                # One full send (3 tries), then one probe at a time: not a connection storm.
                assert 3 < len(connections) <= 3 + 8 / 1.25, connections
        finally:
            hole.close()
            await hole.wait_closed()

    run(scenario())


def test_a_refused_event_is_given_up_and_the_next_ones_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(SIA_CODES, "TA")  # a receiver whose code table lacks TA: DUH

    async def scenario() -> None:
        async with running(Rig(tmp_path, free_port(), ack_timeout_s=1)) as rig:
            await rig.receiver_up()
            trip_pairs(rig, 2)  # BA BR TA TR
            await rig.wait_for(lambda: len(rig.received()) == 3, 10, "TR delivered")
            assert rig.received() == [("BA", 1), ("BR", 1), ("TR", 2)]
            assert rig.outbox.depth(TRANSPORT) == 0
            kinds = [(e.kind, e.details.get("kind")) for e in rig.journal.since(0, 100)]
            assert kinds.count((Kind.TRANSMISSION_REJECTED, "tamper")) == 1

    run(scenario())
