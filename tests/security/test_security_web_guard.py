"""The web server's bounds one by one: login guard, refused-login summaries, connection caps.

The guard and the summaries run on an injected clock; the connection limits are exercised on
a real web server over real loopback sockets (clients bind 127.x.y.z source addresses).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.config.live import WebConfig
from edge.web.connections import ConnectionLimits
from edge.web.credentials import set_password
from edge.web.guard import LoginGuard, address_key
from edge.web.refusals import RefusalLog
from edge.web.server import WebServer

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- login guard --------------------------------------------------------------------------------
def test_a_locked_address_is_not_forgotten_when_1024_others_fail() -> None:
    clock = Clock()
    guard = LoginGuard(3, 100_000, clock=clock)
    for _ in range(4):
        guard.failed("10.0.0.1", "installer")
    assert guard.locked("10.0.0.1")
    for n in range(1024):
        guard.failed(f"10.1.{n // 250}.{n % 250}", "admin")
    assert len(guard) == 1024  # bounded
    assert guard.locked("10.0.0.1")  # the one waiting was kept, a quiet one was forgotten
    wait = guard.wait("10.0.0.1", "installer")
    assert wait is not None and "too many failed logins from 10.0.0.1" in wait.reason
    clock.now += 60
    assert not guard.locked("10.0.0.1")


def test_when_every_remembered_address_waits_new_ones_are_not_remembered() -> None:
    clock = Clock()
    guard = LoginGuard(1, 100_000, max_addresses=4, clock=clock)
    for n in range(4):
        for _ in range(2):
            guard.failed(f"10.0.0.{n}", None)
    guard.failed("10.0.0.99", None)
    assert len(guard) == 4 and guard.untracked == 1
    assert all(guard.locked(f"10.0.0.{n}") for n in range(4))


def test_rotating_addresses_meet_the_total_budget_but_a_known_address_does_not() -> None:
    clock = Clock()
    guard = LoginGuard(10, 30, clock=clock)
    guard.succeeded("192.168.1.20")  # the installer's tablet, earlier
    for n in range(31):
        assert guard.wait(f"10.9.0.{n}", f"user{n}") is None
        guard.failed(f"10.9.0.{n}", f"user{n}")
    wait = guard.wait("10.9.1.1", "someone")
    assert wait is not None and "on this box from the network" in wait.reason
    assert wait.seconds == 60
    assert guard.wait("192.168.1.20", "installer") is None
    clock.now += 60
    assert guard.wait("10.9.1.1", "someone") is None


def test_a_user_name_backs_off_2_4_8_s_after_its_fifth_failure() -> None:
    clock = Clock()
    guard = LoginGuard(1000, 100_000, user_backoff_max_s=6, clock=clock)
    waits = []
    for n in range(8):
        wait = guard.wait(f"10.0.{n}.1", "installer")
        waits.append(wait.seconds if wait else 0)
        clock.now += wait.seconds if wait else 0
        guard.failed(f"10.0.{n}.1", "installer", known_user=True)
    assert waits == [0, 0, 0, 0, 0, 2, 4, 6]  # capped at user_backoff_max_s
    assert guard.wait("10.0.9.1", "tech") is None  # another name is not held back
    # Unknown names back off the same way: the answers do not tell which names exist.
    for n in range(5):
        guard.failed(f"10.1.{n}.1", "nobody")
    wait = guard.wait("10.2.0.1", "nobody")
    assert wait is not None and "too many failed logins as 'nobody'" in wait.reason
    guard.succeeded("10.3.0.1")
    assert guard.wait("10.3.0.1", "installer") is None  # a known address is not held back


def test_ipv6_clients_are_keyed_by_their_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:10.0.0.7") == "10.0.0.7"
    assert address_key("10.0.0.7") == "10.0.0.7"


# -- refused-login summaries --------------------------------------------------------------------
def test_refusals_give_at_most_two_rows_per_address_per_minute() -> None:
    clock, rows = Clock(), []
    log = RefusalLog(rows.append, clock=clock, wall=lambda: 1_767_268_800.0 + clock.now)
    for n in range(674):  # what one client without a password sent in a second
        log.refused("10.0.0.5", "admin" if n % 2 else "installer", 401, "yard")
        clock.now += 0.001
    assert len(rows) == 1 and rows[0]["count"] == 1
    for _ in range(59):
        clock.now += 1
        log.tick()
    assert len(rows) == 1
    clock.now += 1
    log.tick()
    assert len(rows) == 2
    summary = rows[1]
    assert summary["count"] == 673 and summary["users"] == ["admin", "installer"]
    assert summary["remote"] == "10.0.0.5" and summary["camera"] == "yard"
    assert "673 refused login(s) from 10.0.0.5" in summary["reason"]
    assert log.total == 674 and log.rows == 2


def test_many_addresses_are_bounded_and_folded_into_one_row() -> None:
    clock, rows = Clock(), []
    log = RefusalLog(rows.append, max_addresses=5, max_immediate=3, clock=clock)
    for n in range(200):
        log.refused(f"10.0.{n // 250}.{n % 250}", "admin", 429)
    assert len(rows) == 3  # first refusals reported at once: at most max_immediate
    log.flush()
    others = [r for r in rows if r["remote"] == "*"]
    assert len(others) == 1 and others[0]["addresses"] == 195 and others[0]["count"] == 195
    assert sum(r["count"] for r in rows) == 200
    assert len(rows) == 3 + 2 + 1  # immediate, the pending tracked ones, the others


# -- connection limits on a real server ---------------------------------------------------------
class Hub:
    def describe(self) -> dict[str, Any]:
        return {"site": "t", "cameras": [], "outputs": []}

    def audit(self, body: dict[str, Any]) -> None:
        pass


@contextlib.asynccontextmanager
async def server(tmp: Path, limits: ConnectionLimits) -> AsyncIterator[WebServer]:
    users = tmp / "web-users"
    set_password(users, "installer", PASSWORD)
    cfg = WebConfig(listen="127.0.0.1", credentials_file=str(users), https=False)
    web = WebServer(cfg.model_copy(update={"port": 0}), Hub(), site_id="t", limits=limits)
    await web.start()
    try:
        yield web
    finally:
        await web.stop()


async def login(port: int, source: str = "127.0.0.1") -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    token = base64.b64encode(f"installer:{PASSWORD}".encode()).decode()
    writer.write(
        f"GET /api/site HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {token}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    return int(head.split(b" ", 2)[1])


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_idle_connections_are_capped_and_evicted_and_the_installer_gets_in(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        limits = ConnectionLimits(total=20, per_address=4, header_s=30)
        async with server(tmp_path, limits) as web:
            idle = []
            for n in range(60):  # three times the cap, from 60 addresses
                idle.append(
                    await asyncio.open_connection(
                        "127.0.0.1", web.port, local_addr=(f"127.5.0.{n + 1}", 0)
                    )
                )
            await asyncio.sleep(0.2)
            assert len(limits) <= 20
            assert limits.evicted >= 40
            # The oldest idle ones were closed to make room; the newest are still open.
            assert await closed_within(idle[0][0], 2)
            assert not await closed_within(idle[-1][0], 0.2)
            assert await login(web.port) == 200
            # One address cannot hold more than per_address.
            mine = [
                await asyncio.open_connection("127.0.0.1", web.port, local_addr=("127.6.0.1", 0))
                for _ in range(6)
            ]
            await asyncio.sleep(0.2)
            assert sum(1 for c in limits._open if c.key == "127.6.0.1") <= 4
            for _, w in idle + mine:
                w.close()

    asyncio.run(scenario())


def test_a_known_installer_connection_outlives_a_flood_from_many_addresses(
    tmp_path: Path,
) -> None:
    """The installer logged in before and holds a connection open (a keep-alive between two
    requests); a flood from 60 addresses fills the table three times over: the flood's own
    connections are closed to make room, the installer's stays, and its next request works."""

    async def scenario() -> None:
        limits = ConnectionLimits(total=20, per_address=4, header_s=30, idle_s=30)
        async with server(tmp_path, limits) as web:
            assert await login(web.port, "127.7.0.1") == 200  # trusted from now on
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", web.port, local_addr=("127.7.0.1", 0)
            )
            await asyncio.sleep(0.1)  # the oldest idle connection in the table
            flood = [
                await asyncio.open_connection(
                    "127.0.0.1", web.port, local_addr=(f"127.8.0.{n + 1}", 0)
                )
                for n in range(60)
            ]
            await asyncio.sleep(0.2)
            assert limits.evicted >= 40
            assert not await closed_within(reader, 0.3)
            token = base64.b64encode(f"installer:{PASSWORD}".encode()).decode()
            request = f"GET /api/site HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {token}\r\n\r\n"
            writer.write(request.encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.split(b" ", 2)[1] == b"200"
            for _, w in [*flood, (reader, writer)]:
                w.close()

    asyncio.run(scenario())


def test_slow_and_silent_clients_are_closed_by_the_deadlines(tmp_path: Path) -> None:
    async def scenario() -> None:
        limits = ConnectionLimits(header_s=1.0, idle_s=1.0)
        async with server(tmp_path, limits) as web:
            silent = await asyncio.open_connection("127.0.0.1", web.port)
            slow = await asyncio.open_connection("127.0.0.1", web.port)
            t0 = time.monotonic()
            for byte in b"GET /api/site HTTP/1.1\r\n":  # a header byte every 0.2 s
                slow[1].write(bytes([byte]))
                await asyncio.sleep(0.2)
                if slow[0].at_eof():
                    break
            assert await closed_within(silent[0], 3)
            assert await closed_within(slow[0], 3)
            assert time.monotonic() - t0 < 6
            assert limits.expired >= 2 and len(limits) == 0
            # A request that never sends its announced body gets 408 after BODY_S.
            assert await login(web.port) == 200

    asyncio.run(scenario())


def test_tls_handshakes_that_never_start_are_counted_and_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        users = tmp_path / "web-users"
        set_password(users, "installer", PASSWORD)
        cfg = WebConfig(listen="127.0.0.1", credentials_file=str(users))
        limits = ConnectionLimits(total=10, header_s=1.0)
        web = WebServer(cfg.model_copy(update={"port": 0}), Hub(), site_id="t", limits=limits)
        await web.start()
        try:
            conns = [
                await asyncio.open_connection(
                    "127.0.0.1", web.port, local_addr=(f"127.7.0.{n + 1}", 0)
                )
                for n in range(30)
            ]
            await asyncio.sleep(0.2)
            assert len(limits) <= 10  # counted before any TLS work
            await asyncio.sleep(2.0)
            assert len(limits) == 0  # the handshake deadline closed them
            for _, w in conns:
                w.close()
        finally:
            await web.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("body", [b"v=0\r\n"])
def test_a_body_that_never_arrives_is_answered_408(tmp_path: Path, body: bytes) -> None:
    from edge.web import connections
    from edge.web import server as server_module

    async def scenario() -> None:
        old = server_module.BODY_S
        server_module.BODY_S = 0.5
        try:
            async with server(tmp_path, ConnectionLimits()) as web:
                reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
                token = base64.b64encode(f"installer:{PASSWORD}".encode()).decode()
                writer.write(
                    (
                        "POST /whep/yard HTTP/1.1\r\nHost: t\r\nContent-Type: application/sdp\r\n"
                        f"Authorization: Basic {token}\r\nContent-Length: 1000\r\n\r\n"
                    ).encode()
                    + body
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.split(b" ", 2)[1] == b"408", head
                writer.close()
        finally:
            server_module.BODY_S = old

    assert connections.BODY_S > 0
    asyncio.run(scenario())
