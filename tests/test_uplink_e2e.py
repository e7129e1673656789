"""Transmission end to end with real parts: a central mosquitto with TLS and the shipped ACL,
the box broker running the configuration we generate (bridge over mutual TLS), `edge run
alarm` as a subprocess, and a central console peer that acknowledges events and signs
commands. Hardware is simulated at the pins only."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.site import KEY, SITE, Site

from edge.uplink.signing import sign_command


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


def test_event_reaches_central_and_ack_empties_the_outbox(site: Site) -> None:
    site.console.expect_payload(f"sites/{SITE}/link", b"1")  # live or retained: a race
    started = site.event("service_started")
    assert (started["sia"], started["cid"]) == ("RR", 305)
    site.trip("panic")
    ev = site.event("panic")
    assert (ev["sia"], ev["cid"], ev["zone"], ev["site"]) == ("PA", 120, "panic", SITE)
    site.ack(started["id"], ev["id"])
    deadline = time.monotonic() + 10
    while True:
        status = json.loads(site.cli("panel", "status", "--json").stdout)
        if status["outbox"]["mqtt"]["depth"] == 0:
            break
        assert time.monotonic() < deadline, status["outbox"]
        time.sleep(0.2)
    # A console connecting now still learns the link state (retained). It takes over the
    # console's client id, so this comes last.
    late = site.connect_console()
    try:
        assert late.expect_payload(f"sites/{SITE}/link", b"1").retain
    finally:
        late.close()


def test_unacknowledged_event_is_resent_with_the_same_id(site: Site) -> None:
    site.trip("lid")
    first = site.event("tamper")
    again = site.event("tamper", timeout=10)  # backoff_min_s = 1
    assert again["id"] == first["id"] and again["hash"] == first["hash"]
    site.ack(first["id"])


def test_resent_after_edge_alarm_is_killed_before_the_ack(site: Site) -> None:
    site.trip("panic")
    ev = site.event("panic")
    site.proc.send_signal(signal.SIGKILL)
    site.proc.wait()
    site.console.seen()
    site.proc = site.start_alarm()
    again = site.event("panic", timeout=20)
    assert again["id"] == ev["id"]


@pytest.mark.parametrize("which", ["central", "box"])
def test_broker_killed_mid_stream_every_event_arrives(site: Site, which: str) -> None:
    """SIGKILL of the central broker, or of the box broker (then the simulator, reached over
    the box bus, waits for it too): every event id still reaches the central station."""
    ids: set[str] = set()
    for i in range(6):
        if i == 3 and which == "box":
            site.box.kill()
            site.box.restart()
        site.trip("panic", "trip" if i % 2 == 0 else "restore")
        if i == 2 and which == "central":
            site.console.close()
            site.central.kill()
    time.sleep(1)
    if which == "central":
        site.central.restart()
        site.console = site.connect_console()
    expected = {r["id"] for r in site.journal() if r["kind"] in ("panic", "panic_restore")}
    assert len(expected) == 6
    deadline = time.monotonic() + 30
    while not expected <= ids:
        assert time.monotonic() < deadline, f"missing {expected - ids}"
        try:
            msg = site.console.expect(f"sites/{SITE}/events", 2)
        except TimeoutError:
            continue
        body = json.loads(msg.payload)
        ids.add(body["id"])
        site.ack(body["id"])


def test_backlog_after_outage_drains_in_journal_order_at_once(site: Site) -> None:
    """The station's view of a zone is the last event it received: after an outage the
    backlog arrives in journal order (a tamper, its restore, the tamper again, then a panic),
    as soon as the link is back, whatever the events' own retry times."""
    site.console.close()
    site.central.stop()  # the central station is away while events happen
    for zone, how in (("lid", "trip"), ("lid", "restore"), ("lid", "trip"), ("panic", "trip")):
        site.trip(zone, how)
    time.sleep(0.5)
    site.central.restart()
    site.console = site.connect_console()
    back = time.monotonic()
    got: list[dict[str, Any]] = []
    while len(got) < 4:
        body = json.loads(site.console.expect(f"sites/{SITE}/events", 30).payload)
        if body["kind"] in ("tamper", "tamper_restore", "panic") and body["id"] not in {
            g["id"] for g in got
        }:
            got.append(body)
    assert [e["kind"] for e in got] == ["tamper", "tamper_restore", "tamper", "panic"], got
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    # The bridge reconnects within its capped back-off; nothing then waits for retry timers.
    assert time.monotonic() - back < 20


def test_signed_command_executes_and_is_journaled(site: Site) -> None:
    cmd = site.command("arm", {"partition": "main"})
    t0 = time.monotonic()
    site.console.publish(f"sites/{SITE}/cmd/arm", json.dumps(cmd))
    result = site.result(cmd["nonce"])
    assert time.monotonic() - t0 < 1.0
    assert result["ok"] is True and result["operator"] == "op-17"
    assert site.event("armed")["details"]["user"] == "op-17"
    rows = [r for r in site.journal() if r["kind"] == "command_executed"]
    assert rows and rows[-1]["details"]["operator"] == "op-17"
    assert rows[-1]["details"]["nonce"] == cmd["nonce"]


@pytest.mark.parametrize("tamper", ["signature", "replay", "site", "stale", "args"])
def test_bad_commands_are_refused_with_a_reason_and_journaled(site: Site, tamper: str) -> None:
    cmd = site.command("disarm", {"partition": "main"})
    topic = f"sites/{SITE}/cmd/disarm"
    if tamper == "signature":
        cmd["args"] = {"partition": "annex"}
        code = "bad_signature"
    elif tamper == "site":
        cmd = sign_command(
            KEY,
            key_id="central-1",
            site="site-b",
            name="disarm",
            args={"partition": "main"},
            operator="op-17",
        )
        code = "wrong_site"
    elif tamper == "stale":
        cmd = site.command("disarm", {"partition": "main"}, ts="2020-01-01T00:00:00.000Z")
        code = "stale"
    elif tamper == "args":
        cmd = site.command("disarm", {"partition": "main", "colour": "red"})
        code = "bad_arguments"
    else:
        site.console.publish(topic, json.dumps(cmd))
        assert site.result(cmd["nonce"])["ok"] is True
        code = "replayed"
    site.console.publish(topic, json.dumps(cmd))
    result = site.result(cmd["nonce"])
    assert (result["ok"], result["code"]) == (False, code), result
    assert result["reason"]
    refused = [r for r in site.journal() if r["kind"] == "command_refused"]
    assert refused and refused[-1]["details"]["code"] == code


def test_garbage_on_a_command_topic_is_refused_not_fatal(site: Site) -> None:
    site.console.publish(f"sites/{SITE}/cmd/arm", b"\xff\xfe{not json")
    deadline = time.monotonic() + 5
    while not any(r["kind"] == "command_refused" for r in site.journal()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert site.proc.poll() is None
    nonce = uuid.uuid4().hex
    cmd = site.command("diag", {}, nonce=nonce)
    site.console.publish(f"sites/{SITE}/cmd/diag", json.dumps(cmd))
    assert site.result(nonce)["ok"] is True


def test_heartbeat_reports_outbox_and_arming(site: Site) -> None:
    beat = json.loads(site.console.expect(f"sites/{SITE}/heartbeat", 15).payload)
    assert beat["v"] == 1 and beat["site"] == SITE
    assert beat["armed"] == {"main": "disarmed"}
    assert "mqtt" in beat["outbox"] and beat["versions"]["edge"]


def test_link_down_too_long_is_a_communication_trouble_with_restore(tmp_path: Path) -> None:
    site = Site(tmp_path, link_trouble_after_s=10)
    try:
        site.console.close()
        site.central.kill()
        deadline = time.monotonic() + 25
        while "comm_trouble" not in [r["kind"] for r in site.journal()]:
            assert time.monotonic() < deadline, "no communication trouble journaled"
            time.sleep(0.5)
        site.central.restart()
        site.console = site.connect_console()
        trouble = site.event("comm_trouble", timeout=20)
        assert (trouble["sia"], trouble["cid"], trouble["qualifier"]) == ("YC", 350, 1)
        restore = site.event("comm_restore", timeout=20)
        assert (restore["sia"], restore["cid"], restore["qualifier"]) == ("YK", 350, 3)
    finally:
        site.close()
