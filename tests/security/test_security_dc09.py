"""DC-09 answers are checked as a receiver checks messages (security issue 9).

The peers are real pysiaalarm receivers. Between the box and them sits a hostile receiver
written here (an asyncio TCP server) that answers the box wrongly on purpose, or, once it
"behaves", passes every frame to the real receiver and its answer back:

- ``replay``: an encrypted ACK captured earlier, replayed with the current sequence number;
- ``account``: the real receiver's ACK with another account in it;
- ``plain``: a plain ``"ACK"`` (framed, right sequence and account) to an encrypted message;
- ``stale``: the genuine ACK of a real receiver whose clock is ten minutes behind;
- ``bare_ack`` / ``bare_duh``: a bare ``"ACK"`` / ``"DUH"`` without sequence or account.

Each must leave the event undelivered (resent later) and be reported once as a receiver
path fault, restored when the answers are good again. The transmitter is driven directly
(unit level), and the whole `edge run alarm` service once per mode (end to end).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from support.alarm import NotifySocket, start_alarm, stop, write_site
from support.broker import Broker

pysia = pytest.importorskip("pysiaalarm.aio", reason="pip install pysiaalarm (dev extra)")
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from pysiaalarm import SIAAccount, SIAEvent  # noqa: E402

from edge.config.dc09 import Dc09Config  # noqa: E402
from edge.config.site import SiteConfig  # noqa: E402
from edge.events import Event, Kind  # noqa: E402
from edge.uplink.dc09 import Dc09Transmitter, SendResult  # noqa: E402
from edge.uplink.outbox import outbox_path  # noqa: E402

ACCOUNT, OTHER = "AAA1", "BBB2"
KEY = "0123456789ABCDEF"  # pysiaalarm's form: 16 characters used as they are
SKEW = dt.timezone(dt.timedelta(minutes=-10))  # the stale receiver's clock: 10 min behind
HOSTILE = ["replay", "account", "plain", "stale"]
EDGE = str(Path(sys.executable).with_name("edge"))
# Our frame as the hostile receiver reads it (after <LF><crc><len>).
OURS = re.compile(r'"(\*?)(SIA-DCS|ADM-CID|NULL)"(\d{4})R([0-9A-F]+)L([0-9A-F]+)#([0-9A-F]+)\[(.*)')


def run(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def reframe(body: str) -> bytes:
    """``<LF><crc><len><body><CR>`` with the receiver library's own CRC."""
    crc = SIAEvent._crc_calc(body)
    assert crc is not None
    return f"\n{crc}{len(body):04X}{body}\r".encode("ascii")


def event_code(star: str, mtype: str, rest: str, key: bytes | None) -> str:
    """The SIA code of one of our frames ("NULL" for a poll), decrypting it if need be."""
    if mtype == "NULL":
        return "NULL"
    if star:
        assert key is not None
        decryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).decryptor()
        rest = (decryptor.update(bytes.fromhex(rest)) + decryptor.finalize()).decode()
    found = re.search(r"/([A-Z]{2})\d{3}\]", rest)
    return found.group(1) if found else "?"


class Hostile:
    """The receiver on the box's path; ``mode`` says how it answers (see the module doc)."""

    def __init__(self, genuine: int, skewed: int, key: bytes | None) -> None:
        self.mode = "good"
        self.genuine, self.skewed, self.key = genuine, skewed, key
        self.recorded: str | None = None  # body of an encrypted ACK captured on the wire
        self.seen: list[tuple[str, str]] = []  # (mode, code) of every frame of the box
        self.skew_s = 0.0  # plain_stamped: how far its timestamp is from the real time
        self.port = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def count(self, code: str, mode: str | None = None) -> int:
        return sum(1 for m, c in self.seen if c == code and mode in (None, m))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        try:
            while True:
                line = (await reader.readuntil(b"\r")).strip(b"\n\r").decode("ascii")
                writer.write(await self._answer(line, upstream))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for _, w in upstream.values():
                w.close()
            writer.close()

    async def _answer(self, line: str, upstream: dict[int, Any]) -> bytes:
        match = OURS.fullmatch(line[8:])
        assert match, line
        star, mtype, seq, rcv, lin, acct, rest = match.groups()
        self.seen.append((self.mode, event_code(star, mtype, rest, self.key)))
        if self.mode == "good":
            answer = await self._ask(self.genuine, line, upstream)
            if answer.startswith('"*ACK"'):
                self.recorded = answer
            return reframe(answer)
        if self.mode == "account":
            answer = await self._ask(self.genuine, line, upstream)
            return reframe(answer.replace(f"#{ACCOUNT}[", f"#{OTHER}["))
        if self.mode == "stale":
            return reframe(await self._ask(self.skewed, line, upstream))
        if self.mode == "replay":
            if self.recorded is None:  # capture one from the receiver whose clock is behind
                self.recorded = await self._ask(self.skewed, line, upstream)
            return reframe(re.sub(r'^("\*?ACK")\d{4}', rf"\g<1>{seq}", self.recorded))
        if self.mode == "replay_verbatim":  # the capture as it was, its own sequence number
            assert self.recorded is not None
            return reframe(self.recorded)
        if self.mode == "plain":
            return reframe(f'"ACK"{seq}R{rcv}L{lin}#{acct}[]')
        if self.mode == "plain_stamped":
            stamp = time.strftime("_%H:%M:%S,%m-%d-%Y", time.gmtime(time.time() + self.skew_s))
            return reframe(f'"ACK"{seq}R{rcv}L{lin}#{acct}[]{stamp}')
        return {"bare_ack": b'"ACK"', "bare_duh": b'"DUH"'}[self.mode]

    async def _ask(self, port: int, line: str, upstream: dict[int, Any]) -> str:
        """Pass the frame to a real receiver; its answer's body (without framing)."""
        if port not in upstream:
            upstream[port] = await asyncio.open_connection("127.0.0.1", port)
        up_reader, up_writer = upstream[port]
        up_writer.write(f"\n{line}\r".encode("ascii"))
        await up_writer.drain()
        answer = await asyncio.wait_for(up_reader.readuntil(b"\r"), 5)
        return answer.strip(b"\n\r").decode("ascii")[8:]


@asynccontextmanager
async def path(encrypted: bool = True) -> AsyncIterator[tuple[Hostile, list[tuple[str, str]]]]:
    """A real receiver, a real one with a slow clock, and the hostile one in front of them.

    Yields the hostile receiver and what the real (correct) receiver took: (mode, code).
    """
    key = KEY if encrypted else None
    taken: list[tuple[str, str]] = []
    clients = []
    hostile: Hostile | None = None

    async def accepted(event: SIAEvent) -> None:
        taken.append((hostile.mode if hostile else "?", str(event.code)))

    async def ignored(event: SIAEvent) -> None:
        return None

    for account, callback in (
        (SIAAccount(ACCOUNT, key), accepted),
        (SIAAccount(ACCOUNT, key, device_timezone=SKEW), ignored),
    ):
        client = pysia.SIAClient("127.0.0.1", 0, [account], callback)
        await client.async_start()
        clients.append(client)
    genuine, skewed = (int(c.server.sockets[0].getsockname()[1]) for c in clients)
    hostile = Hostile(genuine, skewed, KEY.encode() if encrypted else None)
    await hostile.start()
    try:
        yield hostile, taken
    finally:
        await hostile.stop()
        for client in clients:
            await client.async_stop()


def config(port: int, key_file: str | None, **kw: Any) -> Dc09Config:
    base: dict[str, Any] = {
        "account": ACCOUNT,
        "primary": {"host": "127.0.0.1", "port": port},
        "ack_timeout_s": 2,
        "retries": 1,
    }
    if key_file:
        base |= {"key_file": key_file, "key_format": "ascii"}
    return Dc09Config.model_validate({**base, **kw})


def site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "t-site"},
            "partitions": [{"id": "main"}],
            "zones": [{"id": "door", "type": "delayed", "input": {"kind": "gpio", "pin": 4}}],
        }
    )


def write_key(directory: Path) -> str:
    path = directory / "dc09.key"
    path.write_text(KEY)
    os.chmod(path, 0o600)
    return str(path)


class Clock:
    """The box's clock: real time, moved forward when the test says time has passed."""

    def __init__(self) -> None:
        self.ahead_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead_s


def assert_refused(result: SendResult) -> None:
    assert (result.ok, result.outcome, result.attempts) == (False, "failed", 2), result
    assert "answer not trusted" in result.detail, result


# --- the transmitter against the hostile receiver ----------------------------------------


@pytest.mark.parametrize("mode", [*HOSTILE, "bare_ack", "bare_duh"])
def test_untrusted_answers_are_not_deliveries_and_fault_the_path_once(
    tmp_path: Path, mode: str
) -> None:
    changes: list[tuple[str, bool]] = []
    clock = Clock()

    async def scenario() -> None:
        async with path() as (hostile, taken):
            cfg = config(hostile.port, write_key(tmp_path))
            tx = Dc09Transmitter(cfg, site(), lambda p, up: changes.append((p, up)), clock=clock)
            try:
                first = await tx.send(Event(Kind.BURGLARY, zone_id="door"))
                assert first.ok and hostile.recorded is not None  # an ACK on the wire, kept
                hostile.mode = mode
                if mode == "replay":
                    clock.ahead_s = 120  # two minutes later: the captured ACK is now stale
                for _ in range(3):  # the outbox resends; each try is refused
                    assert_refused(await tx.send(Event(Kind.PANIC, zone_id="door")))
                assert changes == [("primary", False)]  # one fault for six refused answers
                assert "answer not trusted" in tx.path_fault("primary")
                assert hostile.count("PA", mode) == 6
                hostile.mode = "good"
                result = await tx.send(Event(Kind.PANIC, zone_id="door"))
                # After the replay the box clock is 2 min ahead: a NAK teaches it, then an ACK.
                tries = 2 if mode == "replay" else 1
                assert (result.ok, result.outcome, result.attempts) == (True, "ack", tries)
                assert changes == [("primary", False), ("primary", True)]
                assert ("good", "PA") in taken
            finally:
                await tx.close()

    run(scenario())


def test_replayed_ack_with_its_own_sequence_number_is_skipped_as_late(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with path() as (hostile, _):
            cfg = config(hostile.port, write_key(tmp_path), ack_timeout_s=0.5, retries=0)
            tx = Dc09Transmitter(cfg, site())
            try:
                assert (await tx.send(Event(Kind.BURGLARY, zone_id="door"))).ok
                hostile.mode = "replay_verbatim"
                result = await tx.send(Event(Kind.PANIC, zone_id="door"))
                assert (result.ok, result.outcome) == (False, "failed")
                assert "no answer" in result.detail
            finally:
                await tx.close()

    run(scenario())


@pytest.mark.parametrize("mode", ["account", "bare_ack", "bare_duh"])
def test_plain_transmission_checks_sequence_and_account_too(mode: str) -> None:
    changes: list[tuple[str, bool]] = []

    async def scenario() -> None:
        async with path(encrypted=False) as (hostile, taken):
            tx = Dc09Transmitter(
                config(hostile.port, None), site(), lambda p, up: changes.append((p, up))
            )
            try:
                hostile.mode = mode
                for _ in range(2):
                    assert_refused(await tx.send(Event(Kind.FIRE, zone_id="door")))
                assert changes == [("primary", False)]
                hostile.mode = "good"
                result = await tx.send(Event(Kind.FIRE, zone_id="door"))
                assert (result.ok, result.attempts) == (True, 1), result
                assert changes == [("primary", False), ("primary", True)]
                assert taken[-1] == ("good", "FA")
            finally:
                await tx.close()

    run(scenario())


def test_plain_ack_with_a_timestamp_outside_the_window_is_refused() -> None:
    """A plain ACK has no timestamp as a rule; when it has one, the window applies."""

    async def scenario() -> None:
        async with path(encrypted=False) as (hostile, _):
            tx = Dc09Transmitter(config(hostile.port, None), site())
            hostile.mode = "plain_stamped"
            try:
                for skew in (-300, -45, 25):
                    hostile.skew_s = skew
                    assert_refused(await tx.send(Event(Kind.FIRE, zone_id="door")))
                for skew in (-30, 0, 15):
                    hostile.skew_s = skew
                    assert (await tx.send(Event(Kind.FIRE, zone_id="door"))).ok, skew
            finally:
                await tx.close()

    run(scenario())


# --- real pysiaalarm, no one in between: delivery still works ----------------------------


@pytest.mark.parametrize("encrypted", [True, False], ids=["aes", "plain"])
def test_real_receiver_answers_are_still_deliveries(tmp_path: Path, encrypted: bool) -> None:
    async def scenario() -> None:
        async with path(encrypted) as (hostile, taken):
            key = write_key(tmp_path) if encrypted else None
            tx = Dc09Transmitter(config(hostile.genuine, key), site())
            try:
                for kind in (Kind.BURGLARY, Kind.BURGLARY_RESTORE):
                    result = await tx.send(Event(kind, zone_id="door"))
                    assert (result.ok, result.outcome, result.attempts) == (True, "ack", 1)
                assert (await tx.poll()).ok
                assert [code for _, code in taken] == ["BA", "BR", "RP"]
            finally:
                await tx.close()

    run(scenario())


# --- end to end: `edge run alarm` -----------------------------------------------------------


class ThreadedPath:
    """:func:`path` on an event loop of its own thread, for a service in a subprocess."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._cm = path()
        self.hostile, self.taken = self.call(self._cm.__aenter__())

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def set_mode(self, mode: str) -> None:
        async def switch() -> None:
            self.hostile.mode = mode

        self.call(switch())

    def close(self) -> None:
        self.call(self._cm.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Site:
    def __init__(self, tmp: Path, broker: Broker, mode: str) -> None:
        self.path = ThreadedPath()
        self.path.set_mode(mode)
        dc09 = (
            f'\n[dc09]\naccount = "{ACCOUNT}"\nack_timeout_s = 1\nretries = 0\n'
            f'key_file = "{write_key(tmp)}"\nkey_format = "ascii"\n'
            f'poll_interval_s = 10\nprimary = {{ host = "127.0.0.1", port = '
            f"{self.path.hostile.port} }}\n"
            "\n[outbox]\nbackoff_min_s = 1\nbackoff_max_s = 10\n"
        )
        self.site = write_site(tmp, broker.url, extra=dc09)
        self.data = tmp / "data"
        self.notify = NotifySocket(tmp / "notify.sock")
        self.proc = start_alarm(self.site, tmp, self.notify)
        self.notify.wait_for("READY=1")

    def events(self) -> list[dict[str, Any]]:
        """The journal, read by the `edge events` command."""
        out = subprocess.run(
            [EDGE, "events", "--json", "--limit", "1000", "--config", str(self.site)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def kinds(self) -> list[str]:
        return [row["kind"] for row in self.events()]

    def pending(self) -> list[str]:
        """Kinds of the events the DC-09 transport still holds in the outbox."""
        db = sqlite3.connect(f"file:{outbox_path(self.data)}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT event_id FROM pending WHERE transport = 'dc09'")
            ids = [row[0] for row in rows]
        finally:
            db.close()
        kinds = {row["id"]: row["kind"] for row in self.events()}
        return [kinds.get(i, "?") for i in ids]

    def close(self) -> None:
        stop(self.proc)
        self.notify.close()
        self.path.close()


@pytest.fixture
def hostile_site(tmp_path: Path, broker: Broker, request: pytest.FixtureRequest) -> Iterator[Site]:
    s = Site(tmp_path, broker, request.param)
    yield s
    s.close()


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.parametrize("hostile_site", HOSTILE, indirect=True)
def test_service_keeps_the_event_resends_it_and_reports_one_receiver_fault(
    hostile_site: Site,
) -> None:
    site, hostile = hostile_site, hostile_site.path.hostile
    mode = hostile.mode
    # The service-started event (RR) is refused three times: initial send and two resends.
    wait(lambda: hostile.count("RR", mode) >= 3, 15, f"RR resent: {hostile.seen}")
    faults = [e for e in site.events() if e["kind"] == "receiver_path_fail"]
    assert len(faults) == 1, site.kinds()
    assert faults[0]["details"]["path"] == "primary"
    assert "answer not trusted" in faults[0]["details"]["reason"]
    assert "receiver_path_restore" not in site.kinds()
    assert "service_started" in site.pending()
    assert ("good", "RR") not in hostile_site.path.taken
    site.path.set_mode("good")
    wait(lambda: ("good", "RR") in hostile_site.path.taken, 20, "RR delivered once good")
    wait(lambda: "receiver_path_restore" in site.kinds(), 15, "path restored")
    wait(lambda: site.pending() == [], 20, "the outbox empties")
    kinds = site.kinds()
    assert (kinds.count("receiver_path_fail"), kinds.count("receiver_path_restore")) == (1, 1)
