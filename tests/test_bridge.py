"""The box broker's bridge to the central broker, with two real mosquittos and real TLS.

The central broker runs docs/central/mosquitto.conf + docs/central/acl (paths substituted);
the box broker runs the configuration edge/uplink/broker.py generates. Certificates come from
a test CA (tests/support/pki.py).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
import ssl
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.alarm import BusWatcher
from support.broker import MOSQUITTO, Broker
from support.central import (
    SUPERUSER,
    Peer,
    box_peer,
    central_section,
    connect,
    console,
    site_config,
    start_box,
    start_central,
)
from support.pki import Pki, make_pki
from support.site import SITE, Site

from edge.config.central import (
    LINK_BACK_WITHIN_S,
    RESTART_CAP_S,
    RESTART_MIN_S,
    CentralConfig,
    missing_files,
)
from edge.uplink import topics
from edge.uplink.bridge import (
    certificate_problems,
    first_delay_s,
    prepare,
    restart_timeout_line,
)
from edge.uplink.broker import render_local_config

pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto is not installed")

A, B = "site-a", "site-b"
NOT_AUTHORIZED = 0x87
UP = ["events", "heartbeat", "cmd/result", "diag", "clips/ev-1", "live/s1/answer", "live/s1/ice"]
DOWN = ["ack", "cmd/arm", "live/s1/offer", "live/s1/ice", "live/s1/bye", "clips/ev-1/ack"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), (A, B))


@pytest.fixture
def central(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    broker = start_central(tmp_path / "central", pki)
    yield broker
    broker.stop()


@dataclass
class Link:
    """A box broker bridged to the central one, a box service and the central console."""

    central: Broker
    box: Broker
    local: Peer  # a box service on the box broker
    console: Peer  # the central station

    def wait_bridged(self) -> None:
        """Until a central message reaches the box: the bridge is connected and subscribed."""
        wait_bridged(self.console, self.local)


def wait_bridged(central_peer: Peer, local: Peer, attempts: int = 25) -> None:
    for n in range(attempts):
        probe = f"probe-{n}".encode()
        central_peer.publish(f"sites/{A}/ack", probe)
        try:
            local.expect_payload(topics.DOWN_ACK, probe, timeout=0.2)
        except TimeoutError:
            continue
        local.seen()
        central_peer.seen()
        return
    raise AssertionError("the bridge did not come up")


@pytest.fixture
def link(tmp_path: Path, pki: Pki, central: Broker) -> Iterator[Link]:
    assert central.port is not None
    box = start_box(tmp_path / "box", A, central_section(pki, A, central.port), superuser=True)
    assert box.port is not None
    local, cons = box_peer(box, SUPERUSER), console(central, pki)
    local.subscribe("edge/#")
    local.subscribe(topics.link(A))
    cons.subscribe("sites/#")
    pair = Link(central, box, local, cons)
    try:
        pair.wait_bridged()
        yield pair
    finally:
        for peer in (local, cons):
            peer.close()
        box.stop()


# -- the mapping and the generated configuration --------------------------------------------


def test_topic_helpers_map_both_ways() -> None:
    assert topics.up("events") == topics.UP_EVENTS == "edge/up/events"
    assert topics.to_central(A, "edge/up/live/s1/ice") == "sites/site-a/live/s1/ice"
    assert topics.to_box(A, "sites/site-a/cmd/arm") == topics.down_cmd("arm") == "edge/down/cmd/arm"
    assert topics.up_clip("ev-1") == "edge/up/clips/ev-1"
    assert topics.link(A) == "sites/site-a/link"
    for bad in (lambda: topics.up("ack"), lambda: topics.down("events")):
        with pytest.raises(ValueError, match="not bridged"):
            bad()
    with pytest.raises(ValueError, match="result"):
        topics.down_cmd("result")
    with pytest.raises(ValueError):
        topics.up_live("s/1", "ice")


def test_generated_config_lists_explicit_topics(tmp_path: Path, pki: Pki) -> None:
    cfg = site_config(tmp_path, A, 1883)
    plain = render_local_config(cfg)
    assert "persistence false" in plain and "\nconnection " not in plain
    text = render_local_config(cfg, central_section(pki, A, 8883))
    lines = text.splitlines()
    assert f"remote_clientid {A}" in lines and "bridge_insecure false" in lines
    assert "persistence true" in lines and "bridge_protocol_version mqttv50" in lines
    assert f"notification_topic {topics.link(A)}" in lines
    bridged = [line for line in lines if line.startswith("topic ")]
    assert len(bridged) == len(topics.UP_SUFFIXES) + len(topics.DOWN_SUFFIXES)
    assert "topic clips/# out 1 edge/up/ sites/site-a/" in bridged
    assert "topic cmd/+ in 1 edge/down/ sites/site-a/" in bridged
    assert not any(line.split()[1] == "#" for line in bridged)
    # Bridge options bind to the last `connection`: nothing global may follow it.
    assert lines.index("connection central") > max(
        i for i, line in enumerate(lines) if line.startswith(("user ", "log_", "max_"))
    )
    disabled = central_section(pki, A, 8883, enabled=False)
    assert "\nconnection " not in render_local_config(cfg, disabled)


def test_key_mode_checked_only_when_the_key_exists(tmp_path: Path) -> None:
    section = CentralConfig(host="central.example", secrets_dir=str(tmp_path))
    assert len(missing_files(section)) == 3  # not a configuration error: reported at start
    key = tmp_path / "site.key"
    key.write_text("not read")
    key.chmod(0o644)
    with pytest.raises(ValidationError, match="chmod 600"):
        CentralConfig(host="central.example", secrets_dir=str(tmp_path))
    key.chmod(0o600)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    CentralConfig(host="central.example", secrets_dir=str(tmp_path))
    with pytest.raises(ValidationError, match="restart_timeout_min_s"):
        CentralConfig(host="c", restart_timeout_min_s=8, restart_timeout_max_s=5)
    with pytest.raises(ValidationError):
        CentralConfig(host="c", ca_file="ca.crt\nlistener 1883 0.0.0.0")


def test_reconnection_backoff_is_capped_and_spread_over_boxes(tmp_path: Path, pki: Pki) -> None:
    """The cap keeps a returning central reached within 15 s; each box's own base keeps
    10,000 boxes that lost it together from all retrying in the same second."""
    defaults = CentralConfig(host="c")
    assert (defaults.restart_timeout_min_s, defaults.restart_timeout_max_s) == (2, RESTART_CAP_S)
    for key in ("restart_timeout_max_s", "restart_timeout_min_s"):
        with pytest.raises(ValidationError, match=key):
            CentralConfig(host="c", **{key: 120})  # the old default cap: 2 min without a link
    text = render_local_config(site_config(tmp_path, A, 1883), central_section(pki, A, 8883))
    assert "restart_timeout 1 1" in text.splitlines()  # test-short delays, as configured
    bases = [first_delay_s(f"site-{n:05d}", defaults) for n in range(10_000)]
    assert set(bases) == set(range(2, RESTART_CAP_S + 1))
    busiest = max(bases.count(b) for b in set(bases))
    assert busiest < 0.15 * len(bases), busiest  # ~1/9 of the boxes per second, not all
    assert first_delay_s(A, defaults) == first_delay_s(A, CentralConfig(host="other"))
    line = restart_timeout_line(A, defaults)
    assert line == f"restart_timeout {first_delay_s(A, defaults)} {RESTART_CAP_S}"


def test_broker_start_names_a_certificate_the_central_would_refuse(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    assert certificate_problems(pki.site(A).cert, A) == []
    (wrong_cn,) = certificate_problems(pki.site(B).cert, A)
    assert "CN=site-b" in wrong_cn and "CN=site-a" in wrong_cn
    (expired,) = certificate_problems(pki.expired.cert, A)
    assert "expired" in expired
    missing = central_section(pki, A, 8883, cert_file="absent.crt")
    with caplog.at_level(logging.ERROR, logger="edge.uplink.bridge"):
        prepare(str(tmp_path / "data"), A, central_section(pki, A, 8883, cert_file="site-b.crt"))
        prepare(str(tmp_path / "data"), A, missing)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "CN=site-b" in logged and "absent.crt does not exist" in logged
    assert (tmp_path / "data" / "broker").is_dir()


# -- messages both ways -----------------------------------------------------------------------


def test_box_messages_reach_the_central_under_the_site(link: Link) -> None:
    for suffix in UP:
        link.local.publish(topics.up(suffix), f"up {suffix}")
        got = link.console.expect_payload(f"sites/{A}/{suffix}", f"up {suffix}".encode())
        assert got.topic == topics.to_central(A, topics.up(suffix))


def test_central_messages_reach_the_box(link: Link) -> None:
    for suffix in DOWN:
        link.console.publish(f"sites/{A}/{suffix}", f"down {suffix}")
        link.local.expect_payload(topics.down(suffix), f"down {suffix}".encode())


def test_only_listed_topics_leave_the_box(link: Link) -> None:
    link.local.publish("edge/events", "box only")
    link.local.publish("edge/up/secret", "not bridged")
    link.local.publish(topics.UP_EVENTS, "marker")
    got = link.console.until(f"sites/{A}/events", b"marker")
    assert [m.payload for m in got] == [b"marker"]


def test_overlapping_patterns_do_not_echo(link: Link) -> None:
    """cmd/result (out) matches cmd/+ (in), live/+/ice goes both ways, clips/# (out) covers
    clips/+/ack (in): with MQTT 5 no-local nothing the box sends comes back to it."""
    echoes = ["cmd/result", "live/s1/ice", "clips/ev-1/ack"]
    for suffix in echoes:
        link.local.publish(topics.UP_PREFIX + suffix, "from the box")
        link.console.expect_payload(f"sites/{A}/{suffix}", b"from the box")
    link.console.publish(f"sites/{A}/ack", "marker")  # after the echoes would have been sent
    got = link.local.until(topics.DOWN_ACK, b"marker")
    assert [m.topic for m in got if m.topic.startswith(topics.DOWN_PREFIX)] == [topics.DOWN_ACK]


# -- link notifications, failures and recovery -------------------------------------------------


def test_link_is_retained_and_the_will_says_0_after_sigkill(link: Link, pki: Pki) -> None:
    late = console(link.central, pki)
    late.subscribe(topics.link(A))
    up = late.expect(topics.link(A))
    assert (up.payload, up.retain) == (b"1", True)
    assert link.box.port is not None
    box_service = box_peer(link.box, "observer")  # the same topic, retained, on the box broker
    box_service.subscribe(topics.link(A))
    local_up = box_service.expect(topics.link(A))
    assert (local_up.payload, local_up.retain) == (b"1", True)
    box_service.close()

    link.box.kill()
    assert late.expect(topics.link(A)).payload == b"0"
    later = console(link.central, pki)
    later.subscribe(topics.link(A))
    down = later.expect(topics.link(A))
    assert (down.payload, down.retain) == (b"0", True)
    for peer in (late, later):
        peer.close()


def test_bridge_comes_back_after_a_central_restart(link: Link, pki: Pki) -> None:
    link.console.close()
    link.central.restart()
    link.local.expect_payload(topics.link(A), b"0")  # the box sees its link drop...
    link.local.expect_payload(topics.link(A), b"1")  # ...and come back
    link.console = console(link.central, pki)
    link.console.subscribe("sites/#")
    link.wait_bridged()
    link.local.publish(topics.UP_EVENTS, "after restart")
    link.console.expect_payload(f"sites/{A}/events", b"after restart")


ATTEMPT = re.compile(r"^(\S+): Connecting bridge \(step 1\) ")
FAILED = "Error creating bridge"


def bridge_attempts(box: Broker) -> list[dt.datetime]:
    """When the box broker started each connection attempt (its log has whole seconds)."""
    lines = box.log_path.read_text(errors="replace").splitlines()
    found = (ATTEMPT.match(line) for line in lines)
    return [dt.datetime.fromisoformat(m.group(1)) for m in found if m]


def wait_capped(box: Broker, cap_s: int, budget_s: float) -> list[float]:
    """Until two attempts are a full cap apart (mosquitto adds 1-2 s to each delay): the
    back-off has grown to its cap. Returns the gaps seen, in seconds."""
    deadline = time.monotonic() + budget_s
    while True:
        times = bridge_attempts(box)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        if gaps and gaps[-1] >= cap_s + 1:
            return gaps
        assert time.monotonic() < deadline, f"no capped delay within {budget_s} s: {gaps}"
        time.sleep(0.2)


def wait_failure(box: Broker, timeout: float) -> None:
    """Until the box broker logs a new failed attempt."""
    seen = box.log_path.read_text(errors="replace").count(FAILED)
    deadline = time.monotonic() + timeout
    while box.log_path.read_text(errors="replace").count(FAILED) == seen:
        assert time.monotonic() < deadline, box.log_tail()
        time.sleep(0.02)


def wait_link(watch: BusWatcher, state: bytes, timeout: float) -> float:
    """Monotonic time at which the box bus said the link is ``state``."""
    deadline = time.monotonic() + timeout
    while (
        msg := watch.wait(topics.link(SITE), max(0.01, deadline - time.monotonic()))
    ).payload != state:
        pass
    return msg.at


@pytest.mark.slow
def test_link_and_held_event_back_within_15_s_of_a_long_outage(tmp_path: Path) -> None:
    """The production back-off (2-10 s) is left to reach its cap while the central broker is
    down, which returns at the worst moment, just after an attempt failed: the link reads 1
    and an alarm raised during the outage reaches the central within 15 s."""
    site = Site(tmp_path, restart_timeout_min_s=RESTART_MIN_S, restart_timeout_max_s=RESTART_CAP_S)
    watch = site.watcher((topics.link(SITE),))
    try:
        site.console.close()
        site.central.stop()
        wait_link(watch, b"0", timeout=10)
        gaps = wait_capped(site.box, RESTART_CAP_S, budget_s=75)
        site.trip("panic")  # held in edge-alarm's outbox while the link is down
        wait_failure(site.box, timeout=RESTART_CAP_S + 5)
        back = time.monotonic()
        site.central.restart()
        site.console = site.connect_console()  # the station is there before the box is
        link_s = wait_link(watch, b"1", timeout=30) - back
        site.event("panic", timeout=30)
        event_s = time.monotonic() - back
        print(
            f"attempt gaps {gaps} s; central back: link 1 in {link_s:.1f} s, event {event_s:.1f} s"
        )
        assert link_s <= LINK_BACK_WITHIN_S and event_s <= LINK_BACK_WITHIN_S, (link_s, event_s)
    finally:
        watch.close()
        site.close()


def test_queued_messages_survive_a_box_broker_restart(link: Link, pki: Pki) -> None:
    """Best effort, bounded: the outbox guarantees delivery; the broker only helps."""
    link.console.close()
    link.central.stop()
    link.local.expect_payload(topics.link(A), b"0")
    for n in range(3):
        link.local.publish(topics.UP_EVENTS, f"queued {n}")
    link.local.close()
    link.box.stop()  # SIGTERM: mosquitto saves its queue
    link.central.restart()
    link.console = console(link.central, pki)
    link.console.subscribe(f"sites/{A}/events")
    link.box.restart()
    for n in range(3):
        assert link.console.expect(f"sites/{A}/events").payload == f"queued {n}".encode()
    assert link.box.port is not None
    link.local = box_peer(link.box, SUPERUSER)


# -- TLS and ACL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["other CA", "expired", "no certificate", "server from an unknown CA", "plaintext"]
)
def test_central_refuses_bad_clients(central: Broker, pki: Pki, case: str) -> None:
    assert central.port is not None
    kwargs = {
        "other CA": {"cert": pki.foreign, "ca_file": pki.ca.ca_file},
        "expired": {"cert": pki.expired, "ca_file": pki.ca.ca_file},
        "no certificate": {"cert": None, "ca_file": pki.ca.ca_file},
        "server from an unknown CA": {"cert": pki.site(A), "ca_file": pki.other_ca.ca_file},
        "plaintext": {},  # MQTT without TLS to the TLS port: no fallback, no CONNACK
    }[case]
    with pytest.raises((ConnectionError, ssl.SSLError)):
        connect(central.port, **kwargs)  # type: ignore[arg-type]


def test_box_refuses_a_central_it_cannot_verify(central: Broker, pki: Pki, tmp_path: Path) -> None:
    assert central.port is not None
    wrong = central_section(pki, A, central.port, ca_file=pki.other_ca.ca_file.name)
    box = start_box(tmp_path / "box", A, wrong)
    try:
        deadline = time.monotonic() + 5
        while "certificate verify failed" not in box.log_path.read_text():
            assert time.monotonic() < deadline, box.log_tail()
            time.sleep(0.05)
        assert f"as {A}" not in central.log_path.read_text()
    finally:
        box.stop()


def test_a_site_cannot_touch_another_sites_topics(link: Link, pki: Pki) -> None:
    assert link.central.port is not None
    other = connect(link.central.port, cert=pki.site(B), ca_file=pki.ca.ca_file)
    refused = other.publish(f"sites/{A}/cmd/arm", "forged")
    assert refused.value == NOT_AUTHORIZED
    # mosquitto 2.0 grants the SUBACK but never delivers; a refusal (0x87) is fine too.
    codes = other.subscribe(f"sites/{A}/#")
    assert codes[0].value in (1, NOT_AUTHORIZED)
    other.subscribe(f"sites/{B}/#")
    link.console.publish(f"sites/{A}/ack", "for a")
    link.console.publish(f"sites/{B}/ack", "for b")
    seen_by_b = other.until(f"sites/{B}/ack", b"for b")
    assert not [m for m in seen_by_b if m.topic.startswith(f"sites/{A}/")]
    seen_by_a = link.local.until(topics.DOWN_ACK, b"for a")
    assert topics.down_cmd("arm") not in [m.topic for m in seen_by_a]
    other.close()


def test_a_site_cannot_take_over_another_sites_client_id(link: Link, pki: Pki) -> None:
    assert link.central.port is not None
    impostor = connect(link.central.port, cert=pki.site(B), ca_file=pki.ca.ca_file, client_id=A)
    link.console.publish(f"sites/{A}/ack", "still here")
    got = link.local.until(topics.DOWN_ACK, b"still here")
    assert (topics.link(A), b"0") not in [(m.topic, m.payload) for m in got]
    impostor.close()
