"""The box bus client against a real mosquitto: acks, order, reconnects, bounds, transports."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from support.broker import Broker, free_port

from edge.bus import Bus, Message, Topics, parse_url, publish_once, request_once
from edge.errors import BusError, CommandError, ConfigError


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def connected(url: str, name: str, **kwargs: Any) -> Bus:
    bus = Bus(url, name, **kwargs)
    await bus.start()
    assert await bus.wait_connected(5), bus.last_error
    return bus


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def close_all(*buses: Bus) -> None:
    for bus in buses:
        await bus.close()


def test_sequential_publishes_are_acknowledged_and_arrive_in_order(broker: Broker) -> None:
    async def main() -> None:
        reader = await connected(broker.url, "reader")
        writer = await connected(broker.url, "writer")
        sub = reader.subscribe("t/order")
        assert await sub.wait_subscribed(5)
        got: list[int] = []

        async def consume() -> None:
            async for msg in sub:
                got.append(int(msg.payload))
                if len(got) == 1000:
                    return

        consumer = asyncio.create_task(consume())
        for i in range(1000):
            await writer.publish("t/order", str(i))
        assert writer.stats["published"] == 1000
        await asyncio.wait_for(consumer, 10)
        assert got == list(range(1000))
        await close_all(reader, writer)

    run(main())


def test_publish_many_keeps_order_and_reports_the_acknowledged_prefix(broker: Broker) -> None:
    async def main() -> None:
        reader = await connected(broker.url, "reader", queue_size=5000)
        writer = await connected(broker.url, "writer", queue_size=50)
        sub = reader.subscribe("t/many")
        assert await sub.wait_subscribed(5)
        items = [("t/many", str(i)) for i in range(900)]  # within the broker queue
        assert await writer.publish_many(items, window=40) == 900
        got = [int((await sub.get(5)).payload) for _ in range(900)]
        assert got == list(range(900))
        # A window wider than the bus bound: the excess is refused at once, and the count
        # says exactly how many of the leading items the broker acknowledged.
        assert await writer.publish_many(items[:200], window=80) == 50
        await close_all(reader, writer)

    run(main())


def test_qos1_publish_returns_only_after_the_broker_acknowledged(broker: Broker) -> None:
    async def main() -> None:
        bus = await connected(broker.url, "writer")
        broker.pause()
        try:
            # qos 0 only needs the write, which a hung broker's socket buffer still takes
            await asyncio.wait_for(bus.publish("t/q0", "x", qos=0), 2)
            pending = asyncio.create_task(bus.publish("t/q1", "x", qos=1, timeout=5))
            await asyncio.sleep(0.3)
            assert not pending.done()
        finally:
            broker.resume()
        await pending
        await bus.close()

    run(main())


def test_resubscribes_after_broker_restart(broker: Broker) -> None:
    async def main() -> None:
        changes: list[bool] = []
        reader = Bus(broker.url, "reader")
        reader.on_connect_change = changes.append
        sub = reader.subscribe("t/r")
        await reader.start()
        assert await sub.wait_subscribed(5)
        await asyncio.to_thread(broker.restart)
        await eventually(lambda: reader.stats["connects"] >= 2)
        assert await sub.wait_subscribed(5)
        writer = await connected(broker.url, "writer")
        await writer.publish("t/r", "after restart")
        assert (await sub.get(5)).payload == b"after restart"
        assert changes == [True, False, True]
        assert reader.stats["disconnects"] == 1
        await close_all(reader, writer)

    run(main())


def test_publish_while_down_waits_for_the_broker(broker: Broker) -> None:
    async def main() -> None:
        writer = await connected(broker.url, "writer")
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: not writer.connected)
        pending = asyncio.create_task(writer.publish("t/late", "kept", retain=True, timeout=10))
        await asyncio.sleep(0.3)
        assert not pending.done()
        await asyncio.to_thread(broker.restart)
        await pending
        checker = await connected(broker.url, "checker")
        msg = await checker.subscribe("t/late").get(5)
        assert (msg.payload, msg.retain) == (b"kept", True)
        await close_all(writer, checker)

    run(main())


def test_publish_while_down_raises_after_timeout(broker: Broker) -> None:
    async def main() -> None:
        writer = await connected(broker.url, "writer")
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: not writer.connected)
        with pytest.raises(BusError, match=r"cannot reach the box broker at mqtt://127\.0\.0\.1"):
            await writer.publish("t/x", "lost", timeout=0.3)
        assert writer.stats["pending"] == 0
        assert "Connection refused" in (writer.last_error or "")
        await writer.close()

    run(main())


def test_waiting_publishes_are_bounded_and_fail_on_close() -> None:
    async def main() -> None:
        bus = Bus(f"mqtt://127.0.0.1:{free_port()}", "bounded", queue_size=3)
        await bus.start()
        waiting = [asyncio.create_task(bus.publish("t", str(i), timeout=10)) for i in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(BusError, match="queue_size 3"):
            await bus.publish("t", "one too many")
        await bus.close()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, BusError) and "closed" in str(r) for r in results)

    run(main())


def test_full_subscription_drops_the_oldest_and_counts(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        reader = await connected(broker.url, "reader")
        sub = reader.subscribe("t/b", maxsize=5)
        assert await sub.wait_subscribed(5)
        writer = await connected(broker.url, "writer")
        for i in range(20):
            await writer.publish("t/b", str(i))
        await eventually(lambda: sub.dropped == 15)
        assert [int((await sub.get(1)).payload) for _ in range(5)] == [15, 16, 17, 18, 19]
        assert reader.stats["dropped"] == 15
        await close_all(reader, writer)

    with caplog.at_level(logging.WARNING, logger="edge.bus"):
        run(main())
    assert "dropped the oldest" in caplog.text


def test_overlapping_and_shared_filters_deliver_once_each(broker: Broker) -> None:
    async def main() -> None:
        reader = await connected(broker.url, "reader")
        everything, only_a, also_a = (
            reader.subscribe("t/#"),
            reader.subscribe("t/a"),
            reader.subscribe("t/a"),
        )
        for sub in (everything, only_a):
            assert await sub.wait_subscribed(5)
        writer = await connected(broker.url, "writer")
        await writer.publish("t/a", "1")
        also_a.close()  # only_a shares the filter: the broker subscription must stay
        await writer.publish("t/b", "2")
        await writer.publish("t/a", "3")
        assert [(await everything.get(2)).payload for _ in range(3)] == [b"1", b"2", b"3"]
        assert [(await only_a.get(2)).payload for _ in range(2)] == [b"1", b"3"]
        with pytest.raises(TimeoutError):
            await everything.get(0.2)  # no duplicate from the overlapping filter
        assert [m.payload async for m in also_a] == []
        await close_all(reader, writer)

    run(main())


def test_unix_socket_transport(unix_broker: Broker) -> None:
    async def main() -> None:
        reader = await connected(unix_broker.url, "reader")
        sub = reader.subscribe(Topics.ZONE_STATE_ALL)
        assert await sub.wait_subscribed(5)
        writer = await connected(unix_broker.url, "writer")
        await writer.publish(Topics.zone_state("hall"), {"state": "alarm"})
        msg = await sub.get(5)
        assert msg.topic == "edge/zones/hall/state"
        assert msg.json() == {"state": "alarm"}
        assert msg.payload == b'{"state":"alarm"}'
        await close_all(reader, writer)

    run(main())


def test_will_is_sent_on_a_broken_connection_but_not_on_close(broker: Broker) -> None:
    async def main() -> None:
        watcher = await connected(broker.url, "watcher")
        sub = watcher.subscribe("t/will")
        assert await sub.wait_subscribed(5)
        polite = await connected(broker.url, "polite", will=("t/will", b"polite", False))
        await polite.close()
        script = (
            "import asyncio, sys\nfrom edge.bus import Bus\n"
            "async def main():\n"
            f"    bus = Bus({broker.url!r}, 'rude', will=('t/will', b'rude', False))\n"
            "    await bus.start(); await bus.wait_connected(5); print('up', flush=True)\n"
            "    await asyncio.sleep(60)\n"
            "asyncio.run(main())\n"
        )
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None
            assert await asyncio.to_thread(child.stdout.readline) == b"up\n"
        finally:
            child.kill()
            child.wait()
        assert (await sub.get(5)).payload == b"rude"  # and not b"polite" first
        await watcher.close()

    run(main())


def test_publish_once_names_the_broker_when_nothing_listens(tmp_path: Any) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    with pytest.raises(BusError) as err:
        publish_once(url, "t/x", "x", timeout=0.3)
    assert str(err.value) == (
        f"cannot reach the box broker at {url}: Connection refused (ECONNREFUSED); "
        "is edge-broker running?"
    )
    with pytest.raises(BusError, match=r"No such file or directory \(ENOENT\)"):
        publish_once(f"unix://{tmp_path}/none.sock", "t/x", "x", timeout=0.3)


def test_publish_once_and_request_once(broker: Broker) -> None:
    publish_once(broker.url, "t/once", {"a": 1}, retain=True)

    async def main() -> None:
        responder = await connected(broker.url, "responder")
        retained = await responder.subscribe("t/once").get(5)
        assert retained.payload == b'{"a":1}'
        sub = responder.subscribe("t/req")
        assert await sub.wait_subscribed(5)

        async def respond() -> None:
            req = (await sub.get(5)).json()
            await responder.publish(req["reply"], {"echo": req["x"]})

        task = asyncio.create_task(respond())
        reply = await asyncio.to_thread(
            request_once, broker.url, "t/req", {"x": 7, "reply": "t/rep"}, "t/rep", 5.0
        )
        await task
        assert reply.json() == {"echo": 7}
        with pytest.raises(TimeoutError, match="nothing on t/nobody"):
            await asyncio.to_thread(request_once, broker.url, "t/req2", "", "t/nobody", 0.3)
        await responder.close()

    run(main())


def test_message_json_errors_say_what_is_wrong() -> None:
    assert Message("t", b'{"a": [1]}', False, 1).json() == {"a": [1]}
    with pytest.raises(CommandError, match="on edge/x is not UTF-8"):
        Message("edge/x", b"\xff{}", False, 1).json()
    with pytest.raises(CommandError, match=r"on edge/x is not valid JSON: .* line 1 column 2"):
        Message("edge/x", b"{oops}", False, 1).json()


def test_topics_and_ids() -> None:
    assert Topics.zone_state("hall") == "edge/zones/hall/state"
    assert Topics.sim_set("door") == "edge/sim/zones/door/set"
    assert Topics.output_state("siren") == "edge/outputs/siren/state"
    assert Topics.cmd("arm") == "edge/cmd/arm"
    assert Topics.id_in(Topics.SIM_SET_ALL, "edge/sim/zones/door/set") == "door"
    for bad in ("", "a/b", "+", "a#", "x\0"):
        with pytest.raises(CommandError, match="cannot be used in a topic"):
            Topics.zone_state(bad)
    with pytest.raises(CommandError):
        Topics.cmd("result")
    with pytest.raises(CommandError, match="does not match"):
        Topics.id_in(Topics.SIM_SET_ALL, "edge/zones/door/state")


def test_urls_are_local_only() -> None:
    assert parse_url("unix:///run/edge/broker.sock").host == "/run/edge/broker.sock"
    assert (parse_url("mqtt://127.0.0.1:1884").host, parse_url("mqtt://[::1]:1").port) == (
        "127.0.0.1",
        1,
    )
    for bad in ("mqtt://10.0.0.1:1883", "tcp://127.0.0.1:1", "unix://rel.sock", "mqtt://h:x"):
        with pytest.raises(ConfigError, match=r"bus\.url"):
            parse_url(bad)
    with pytest.raises(ValueError, match="invalid topic filter"):
        Bus("mqtt://127.0.0.1:1", "x").subscribe("a/b#")
