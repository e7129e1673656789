"""The DC-09 transmitter against a real receiver: pysiaalarm's asyncio TCP server."""

from __future__ import annotations

import asyncio
import os
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
from edge.uplink.dc09 import Dc09Transmitter, SendResult  # noqa: E402

ACCOUNT = "1234"
WAIT_S = 3.0
EARLIER = "2026-11-22T08:15:42.731Z"  # when the test events "happened"


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "t-site"},
            "partitions": [{"id": "main"}, {"id": "annex"}],
            "zones": [
                {"id": "door", "type": "delayed", "input": {"kind": "gpio", "pin": 4}},
                {"id": "hall", "type": "fire", "input": {"kind": "gpio", "pin": 5}},
                {
                    "id": "shed",
                    "type": "tamper",
                    "partition": "annex",
                    "input": {"kind": "gpio", "pin": 6},
                },
            ],
        }
    )


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A pysiaalarm receiver on loopback; ``events`` holds what it accepted (ACKed)."""

    def __init__(self, client: Any, events: asyncio.Queue[SIAEvent]) -> None:
        self.client = client
        self.events = events
        self.connections = 0
        self.port = 0

    def count_connections(self) -> None:
        handler = self.client.sia_server.handle_line

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            await handler(reader, writer)

        self.client.sia_server.handle_line = counted

    async def next_event(self) -> SIAEvent:
        return await asyncio.wait_for(self.events.get(), WAIT_S)


@asynccontextmanager
async def receiver(
    accounts: list[SIAAccount] | None = None, port: int = 0
) -> AsyncIterator[Receiver]:
    events: asyncio.Queue[SIAEvent] = asyncio.Queue()

    async def accepted(event: SIAEvent) -> None:
        events.put_nowait(event)

    accounts = accounts if accounts is not None else [SIAAccount(ACCOUNT)]
    rcv = Receiver(pysia.SIAClient("127.0.0.1", port, accounts, accepted), events)
    rcv.count_connections()
    await rcv.client.async_start()
    rcv.port = int(rcv.client.server.sockets[0].getsockname()[1])
    try:
        yield rcv
    finally:
        await rcv.client.async_stop()


def config(port: int, **kw: Any) -> Dc09Config:
    base: dict[str, Any] = {
        "account": ACCOUNT,
        "primary": {"host": "127.0.0.1", "port": port},
        "ack_timeout_s": 2,
    }
    return Dc09Config.model_validate({**base, **kw})


def key_file(tmp_path: Path, key: str) -> str:
    path = tmp_path / "dc09.key"
    path.write_text(key)
    os.chmod(path, 0o600)
    return str(path)


def extended(event: SIAEvent) -> list[tuple[str, str | None]]:
    """The extended data blocks pysiaalarm parsed, as (identifier, value)."""
    return [(x.identifier, x.value) for x in event.extended_data or []]


def assert_acked(result: SendResult, path: str = "primary", attempts: int = 1) -> None:
    assert (result.ok, result.outcome, result.receiver, result.attempts) == (
        True,
        "ack",
        path,
        attempts,
    ), result


# --- SIA-DCS and ADM-CID -----------------------------------------------------------------


def test_sia_dcs_events_are_acked_with_their_code_area_and_zone() -> None:
    cases = [
        (Event(Kind.BURGLARY, zone_id="door"), "BA", "1", "001"),
        (Event(Kind.BURGLARY_RESTORE, zone_id="door"), "BR", "1", "001"),
        (Event(Kind.TAMPER, zone_id="shed"), "TA", "2", "003"),
        (Event(Kind.FIRE, zone_id="hall"), "FA", "1", "002"),
    ]

    async def scenario() -> None:
        async with receiver() as rcv:
            tx = Dc09Transmitter(config(rcv.port), site())
            try:
                for event, code, area, zone in cases:
                    assert_acked(await tx.send(event))
                    seen = await rcv.next_event()
                    assert (seen.code, seen.ri, seen.message) == (code, area, zone)
                    assert (seen.account, seen.receiver, seen.line) == (ACCOUNT, "R0", "L0")
                    assert seen.valid_timestamp and not seen.encrypted
            finally:
                await tx.close()

    run(scenario())


def test_null_poll_is_acked_on_one_persistent_connection() -> None:
    async def scenario() -> None:
        async with receiver() as rcv:
            tx = Dc09Transmitter(config(rcv.port), site())
            try:
                assert_acked(await tx.poll())
                assert (await rcv.next_event()).code == "RP"  # pysiaalarm's name for NULL
                assert_acked(await tx.send(Event(Kind.BURGLARY, zone_id="door")))
                seen = await rcv.next_event()
                assert (seen.code, seen.sequence) == ("BA", "0002")
                assert_acked(await tx.poll())
                assert (await rcv.next_event()).sequence == "0003"
                assert rcv.connections == 1
            finally:
                await tx.close()

    run(scenario())


def test_adm_cid_burglary_1130_is_acked() -> None:
    async def scenario() -> None:
        async with receiver() as rcv:
            tx = Dc09Transmitter(config(rcv.port, protocol="ADM-CID"), site())
            try:
                assert_acked(await tx.send(Event(Kind.BURGLARY, zone_id="hall")))
                seen = await rcv.next_event()
                assert seen.message_type.value == "ADM-CID"
                assert (seen.event_qualifier, seen.event_type) == ("1", "130")
                assert (seen.partition, seen.ri, seen.code) == ("01", "002", "BA")
                assert_acked(await tx.send(Event(Kind.TAMPER_RESTORE, zone_id="shed")))
                seen = await rcv.next_event()
                assert (seen.event_qualifier, seen.event_type, seen.partition) == ("3", "137", "02")
            finally:
                await tx.close()

    run(scenario())


def test_verification_link_reaches_the_receiver() -> None:
    url = "https://box.example/clips/ev42.mp4"

    async def scenario() -> None:
        async with receiver() as rcv:
            tx = Dc09Transmitter(config(rcv.port), site())
            try:
                event = Event(Kind.BURGLARY, zone_id="door", details={"clip_url": url}, ts=EARLIER)
                assert_acked(await tx.send(event))
                seen = await rcv.next_event()
                assert extended(seen) == [("V", url), ("H", "08:15:42,11-22-2026")]
            finally:
                await tx.close()

    run(scenario())


# --- time of the event ([H…]) ------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["SIA-DCS", "ADM-CID"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
def test_the_time_the_event_happened_reaches_the_receiver(
    tmp_path: Path, protocol: str, encrypted: bool
) -> None:
    """The frame's timestamp is the sending time (the receiver checks it against its clock);
    an event sent after an outage carries when it happened in its [H…] block."""
    key = "0123456789ABCDEF"

    async def scenario() -> None:
        async with receiver([SIAAccount(ACCOUNT, key if encrypted else None)]) as rcv:
            aes = {"key_file": key_file(tmp_path, key), "key_format": "ascii"}
            tx = Dc09Transmitter(
                config(rcv.port, protocol=protocol, **(aes if encrypted else {})), site()
            )
            try:
                assert_acked(await tx.send(Event(Kind.BURGLARY, zone_id="door", ts=EARLIER)))
                seen = await rcv.next_event()
                assert seen.code == "BA" and bool(seen.encrypted) == encrypted
                assert extended(seen) == [("H", "08:15:42,11-22-2026")]
                assert seen.valid_timestamp  # the frame's own timestamp is still "now"
                assert abs(seen.timestamp.timestamp() - time.time()) < 5
                # A Contact ID alarm with a video link carries the link alone (one block).
                clip = {"clip_url": "https://box.example/c.mp4"}
                assert_acked(await tx.send(Event(Kind.FIRE, zone_id="hall", details=clip)))
                blocks = [x[0] for x in extended(await rcv.next_event())]
                assert blocks == (["V"] if protocol == "ADM-CID" else ["V", "H"])
            finally:
                await tx.close()

    run(scenario())


# --- AES -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["0123456789ABCDEF", "0123456789ABCDEF01234567", "AB" * 16])
def test_aes_with_a_pysiaalarm_key_is_acked(tmp_path: Path, key: str) -> None:
    async def scenario() -> None:
        async with receiver([SIAAccount(ACCOUNT, key)]) as rcv:
            cfg = config(rcv.port, key_file=key_file(tmp_path, key), key_format="ascii")
            tx = Dc09Transmitter(cfg, site())
            try:
                assert_acked(await tx.send(Event(Kind.BURGLARY, zone_id="door")))
                seen = await rcv.next_event()
                assert seen.encrypted and (seen.code, seen.message) == ("BA", "001")
                assert_acked(await tx.poll())
                assert (await rcv.next_event()).code == "RP"
            finally:
                await tx.close()

    run(scenario())


def test_aes_with_a_standard_hex_key_is_acked(tmp_path: Path) -> None:
    hex_key = "00112233445566778899AABBCCDDEEFF"
    account = SIAAccount(ACCOUNT, "0123456789ABCDEF")
    account.key_b = bytes.fromhex(hex_key)  # a receiver holding the 16-byte binary key

    async def scenario() -> None:
        async with receiver([account]) as rcv:
            tx = Dc09Transmitter(config(rcv.port, key_file=key_file(tmp_path, hex_key)), site())
            try:
                assert_acked(await tx.send(Event(Kind.FIRE, zone_id="hall")))
                seen = await rcv.next_event()
                assert seen.encrypted and seen.code == "FA"
            finally:
                await tx.close()

    run(scenario())


def test_wrong_key_is_never_taken_as_delivered(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with receiver([SIAAccount(ACCOUNT, "FEDCBA9876543210")]) as rcv:
            cfg = config(
                rcv.port, key_file=key_file(tmp_path, "0123456789ABCDEF"), key_format="ascii"
            )
            tx = Dc09Transmitter(cfg, site())
            try:
                result = await tx.send(Event(Kind.BURGLARY, zone_id="door"))
                assert result.ok is False and rcv.events.empty()
                # The receiver decrypts garbage: usually it answers nothing (resent, then
                # failed), but now and then the garbage parses far enough to get a DUH.
                if result.outcome == "duh":
                    assert (result.attempts, result.detail.split(":")[0]) == (1, "DUH")
                else:
                    assert (result.outcome, result.attempts) == ("failed", 3)
                    assert "check the account and key" in result.detail
            finally:
                await tx.close()

    run(scenario())


# --- NAK, DUH, timeouts --------------------------------------------------------------------


def test_stale_clock_gets_nak_then_resyncs_and_is_acked() -> None:
    async def scenario() -> None:
        async with receiver() as rcv:
            late = lambda: time.time() - 7200  # noqa: E731 - a box clock two hours behind
            tx = Dc09Transmitter(config(rcv.port), site(), clock=late)
            try:
                assert_acked(await tx.send(Event(Kind.BURGLARY, zone_id="door")), attempts=2)
                seen = await rcv.next_event()
                assert seen.valid_timestamp and seen.code == "BA"
                assert_acked(await tx.send(Event(Kind.BURGLARY_RESTORE, zone_id="door")))
                assert (await rcv.next_event()).code == "BR"
            finally:
                await tx.close()

    run(scenario())


def test_code_the_receiver_does_not_know_is_rejected_with_duh_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(SIA_CODES, "BV")  # a receiver whose code table lacks BV

    async def scenario() -> None:
        async with receiver() as rcv:
            tx = Dc09Transmitter(config(rcv.port), site())
            try:
                result = await tx.send(Event(Kind.BURGLARY_CONFIRMED, zone_id="door"))
                assert (result.ok, result.outcome, result.attempts) == (False, "duh", 1)
                assert result.receiver == "primary" and "DUH" in result.detail
                assert_acked(await tx.send(Event(Kind.BURGLARY, zone_id="door")))
                assert (await rcv.next_event()).code == "BA"  # the BV never reached the callback
            finally:
                await tx.close()

    run(scenario())


def test_unknown_account_is_retried_a_bounded_number_of_times() -> None:
    async def scenario() -> None:
        async with receiver([SIAAccount("9999")]) as rcv:
            tx = Dc09Transmitter(config(rcv.port, retries=1), site())
            try:
                result = await tx.send(Event(Kind.BURGLARY, zone_id="door"))
                assert (result.ok, result.outcome, result.attempts) == (False, "failed", 2)
                assert "NAK" in result.detail
            finally:
                await tx.close()

    run(scenario())


def test_silent_receiver_times_out() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        tx = Dc09Transmitter(config(port, ack_timeout_s=0.5, retries=0), site())
        try:
            result = await tx.poll()
            assert (result.ok, result.outcome, result.attempts) == (False, "failed", 1)
            assert "no answer" in result.detail
        finally:
            await tx.close()
            server.close()
            await server.wait_closed()

    run(scenario())


# --- failover ------------------------------------------------------------------------------


def test_failover_to_secondary_and_back_to_primary() -> None:
    changes: list[tuple[str, bool]] = []
    primary_port = closed_port()

    async def scenario() -> None:
        async with receiver() as secondary:
            cfg = config(primary_port, secondary={"host": "127.0.0.1", "port": secondary.port})
            tx = Dc09Transmitter(cfg, site(), lambda path, up: changes.append((path, up)))
            try:
                result = await tx.send(Event(Kind.BURGLARY, zone_id="door"))
                assert_acked(result, path="secondary", attempts=4)
                assert (await secondary.next_event()).code == "BA"
                assert changes == [("primary", False)] and tx.current_path == "secondary"
                assert_acked(
                    await tx.send(Event(Kind.BURGLARY_RESTORE, zone_id="door")), "secondary"
                )
                assert_acked(await tx.supervise_once(), "secondary")  # primary still down
                assert changes == [("primary", False)]
                async with receiver(port=primary_port) as primary:
                    assert_acked(await tx.supervise_once())
                    assert changes == [("primary", False), ("primary", True)]
                    assert tx.current_path == "primary"
                    assert [(await primary.next_event()).code for _ in range(2)] == ["RP", "RP"]
                    assert_acked(await tx.send(Event(Kind.FIRE, zone_id="hall")))
                    assert (await primary.next_event()).code == "FA"
            finally:
                await tx.close()

    run(scenario())


def test_every_path_down_fails_after_bounded_attempts() -> None:
    changes: list[tuple[str, bool]] = []

    async def scenario() -> None:
        cfg = config(
            closed_port(),
            secondary={"host": "127.0.0.1", "port": closed_port()},
            backup={"host": "127.0.0.1", "port": closed_port()},
            retries=1,
        )
        tx = Dc09Transmitter(cfg, site(), lambda path, up: changes.append((path, up)))
        try:
            result = await tx.send(Event(Kind.BURGLARY, zone_id="door"))
            assert (result.ok, result.outcome, result.receiver, result.attempts) == (
                False,
                "failed",
                "",
                6,
            )
            assert all(name in result.detail for name in ("primary", "secondary", "backup"))
            assert changes == [("primary", False), ("secondary", False), ("backup", False)]
            assert tx.current_path == "primary"
        finally:
            await tx.close()

    run(scenario())


# --- numbers and probes --------------------------------------------------------------------


def test_an_undelivered_event_keeps_its_number_and_a_probe_tries_each_path_once() -> None:
    port = closed_port()

    async def scenario() -> None:
        tx = Dc09Transmitter(config(port, retries=2), site())
        alarm = Event(Kind.BURGLARY, zone_id="door")
        try:
            assert tx.worst_case_s() == 3 * (2 * 2 + 2.0)  # 1 path, 3 tries, 2 s timeouts
            assert (await tx.send(alarm)).attempts == 3  # number 0001, not taken
            probe = await tx.send(alarm, tries=1)
            assert (probe.outcome, probe.attempts) == ("failed", 1)
            assert (await tx.poll(tries=1)).attempts == 1  # a NULL poll takes 0002
            async with receiver(port=port) as rcv:
                assert_acked(await tx.send(alarm, tries=1))
                seen = await rcv.next_event()
                # The same alarm, the same number: a receiver that took it before, but whose
                # ACK was lost, sees a repeat; a new message never reuses a number.
                assert (seen.code, seen.sequence) == ("BA", "0001")
                assert_acked(await tx.send(Event(Kind.BURGLARY_RESTORE, zone_id="door")))
                assert (await rcv.next_event()).sequence == "0003"
        finally:
            await tx.close()

    run(scenario())
