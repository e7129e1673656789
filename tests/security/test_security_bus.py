"""The box bus admits no anonymous client and gives each identity only its own topics.

Against the real parts: the box broker runs the configuration `edge run broker` generates
(identities from `edge bus init`, the generated ACL, the bridge over mutual TLS), edge-alarm
runs as a subprocess, and a central console watches what reaches the station. The attacker is
(a) a process running as uid ``nobody`` and (b) anyone holding edge-video's identity — the
process that parses network input, so the one most likely to be taken over. Each attack of the
audit is tried; the outcome counted is what matters: no actuation, no hidden alarm, no forged
message at the central station.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.central import box_peer
from support.site import SITE, Site

from edge.uplink import topics

NOT_AUTHORISED = 0x87
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
EXTRA = """
[[outputs]]
id = "gate"
pin = 6
mode = "pulsed"
pulse_s = 1.0

[live.actions]
outputs = ["gate"]
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path, extra=EXTRA)
    yield s
    s.close()


def status(site: Site) -> dict[str, Any]:
    out = site.cli("panel", "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def central_events(site: Site, seconds: float) -> list[dict[str, Any]]:
    """Everything the console receives on the site's events topic for ``seconds``."""
    got, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(json.loads(site.console.expect(f"sites/{SITE}/events", left).payload))
        except TimeoutError:
            break
    return got


ATTACKS: list[tuple[str, str, dict[str, Any] | str, bool]] = [
    # (what, box topic, payload, retained)
    ("arm as the installer", "edge/local/installer/cmd", {"action": "arm"}, False),
    ("disarm as the installer", "edge/local/installer/cmd", {"action": "disarm"}, False),
    ("bypass a zone", "edge/local/installer/cmd", {"action": "bypass", "zone": "panic"}, False),
    (
        "open the gate (old panel topic)",
        "edge/alarm/cmd",
        {"action": "on", "output": "gate"},
        False,
    ),
    ("trip a simulated zone", "edge/sim/zones/panic/set", "trip", False),
    ("acknowledge every event", "edge/down/ack", {"v": 1, "ids": ["*"]}, False),
    ("a central command", "edge/down/cmd/arm", {"v": 1, "forged": True}, False),
    ("say the link is down", topics.link(SITE), "0", True),
    ("a forged event to the station", "edge/up/events", {"v": 1, "id": "forged-1"}, False),
    ("a forged command result", "edge/up/cmd/result", {"v": 1, "nonce": "n1"}, False),
    ("a forged heartbeat", "edge/up/heartbeat", {"v": 1, "seq": 999}, False),
    ("a forged panel status", "edge/alarm/status", {"v": 1}, True),
    ("a forged output state", "edge/outputs/gate/state", {"v": 1, "on": True}, True),
    ("a forged diagnostics report", "edge/diag/report", {"v": 1, "status": "ok"}, True),
    ("a forged report to the station", "edge/up/diag", {"v": 1, "status": "ok"}, False),
    ("ask itself to restart", "edge/remedy/video", {"action": "restart"}, False),
]


def test_edge_video_identity_can_neither_actuate_nor_hide_nor_forge(site: Site) -> None:
    site.console.expect_payload(f"sites/{SITE}/link", b"1")
    attacker = box_peer(site.box, "edge-video")
    before = status(site)
    try:
        codes = {what: attacker.publish(t, _raw(p), retain=r).value for what, t, p, r in ATTACKS}
        # Tele-actions are edge-video's one way to act, and edge-alarm checks them again:
        # an output outside [live.actions] and anything but an output are refused there.
        attacker.subscribe("edge/alarm/reply/video/#")
        for req in (
            {"action": "on", "output": "siren", "user": "op"},
            {"action": "arm", "user": "op"},
            {"action": "bypass", "zone": "panic", "user": "op"},
        ):
            tok = f"edge/alarm/reply/video/t{len(req)}{req['action']}"
            attacker.publish("edge/live/action", json.dumps({**req, "reply": tok}))
            answer = json.loads(attacker.expect(tok).payload)
            assert answer["ok"] is False, (req, answer)
        # A session takeover: another identity's client id. The broker uses the user name as
        # the client id, so edge-alarm stays connected.
        for _ in range(3):
            thief = box_peer(site.box, "edge-video", client_id=f"edge-alarm-{SITE}")
            thief.close()
    finally:
        attacker.close()
    assert codes == {what: NOT_AUTHORISED for what, *_ in ATTACKS}, codes
    after = status(site)
    assert after["panel"]["partitions"] == before["panel"]["partitions"]  # not armed
    assert not after["panel"]["zones"]["panic"]["bypassed"]
    assert not after["outputs"]["gate"]["on"] and not after["outputs"]["siren"]["on"]
    log = site.box.log_path.read_text()
    assert "Client edge-alarm already connected" not in log
    assert log.count("as edge-alarm (") == 1  # edge-alarm's one connection, never replaced
    # A real panic goes through at once, and nothing forged reached the station.
    site.console.seen()
    site.trip("panic")
    arrived = central_events(site, 3)
    kinds = [e["kind"] for e in arrived]
    assert "panic" in kinds, kinds
    rows = site.journal()
    assert {e["id"] for e in arrived} <= {r["id"] for r in rows}
    assert not [r for r in rows if r["kind"] in ("armed", "disarmed", "bypass", "output_on")]
    # The station still sees the link up (retained). This console takes over the first
    # one's client id, so it comes last.
    late = site.connect_console()
    try:
        assert late.expect_payload(f"sites/{SITE}/link", b"1").retain
    finally:
        late.close()


def test_local_command_is_journaled_as_the_identity_that_sent_it(site: Site) -> None:
    out = site.cli("panel", "arm")
    assert out.returncode == 0, out.stderr
    armed = [r for r in site.journal() if r["kind"] == "armed"]
    assert armed and armed[-1]["details"]["user"] == "installer"
    # A --user string no longer exists: the identity decides.
    spoof = site.cli("panel", "disarm", "--user", "director")
    assert spoof.returncode == 2 and "--user" in spoof.stderr
    nobody = site.cli("panel", "disarm", "--as", "director")
    assert nobody.returncode == 77 and "director" in nobody.stderr  # EX_NOPERM
    out = site.cli("panel", "disarm", "--as", "observer")
    assert out.returncode == 0, out.stderr
    disarmed = [r for r in site.journal() if r["kind"] == "disarmed"]
    assert disarmed[-1]["details"]["user"] == "observer"


def test_uid_nobody_gets_no_identity_and_no_anonymous_access(site: Site) -> None:
    assert site.box.identities is not None and site.box.port is not None
    ids = site.box.identities
    # The identities directory must be reachable for the test to mean something: a real box
    # has /etc/edge/secrets/bus 0750 root:edge; here only the files' own modes protect them.
    for parent in (ids, *ids.parents):
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    # Debian's own python (the project's venv lives under /root, closed to nobody); the
    # MQTT 5 CONNECT is written by hand: no client library is needed to knock on a port.
    script = textwrap.dedent(
        f"""
        import json, socket
        readable = []
        for name in ("edge-alarm", "edge-video", "edge-sim", "installer", "passwd"):
            try:
                open({str(ids)!r} + "/" + name).read()
                readable.append(name)
            except PermissionError:
                pass
        # CONNECT: "MQTT", version 5, clean start, keepalive 60, no properties, empty id.
        packet = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([5, 2, 0, 60, 0, 0, 0])
        with socket.create_connection(("127.0.0.1", {site.box.port}), timeout=5) as s:
            s.sendall(packet)
            connack = s.recv(16)
        print(json.dumps({{"readable": readable, "connack": [connack[3]]}}))
        """
    )
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", script],
        user=NOBODY,
        group=NOBODY,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen == {"readable": [], "connack": [NOT_AUTHORISED]}, seen
    assert "not authorised" in site.box.log_path.read_text()


def test_identity_files_and_acl_as_generated(site: Site) -> None:
    assert site.box.identities is not None
    modes = {p.name: p.stat().st_mode & 0o777 for p in site.box.identities.iterdir()}
    assert modes["edge-alarm"] == modes["edge-video"] == modes["passwd"] == 0o600
    assert modes["installer"] == modes["edge-sim"] == 0o640
    passwd = (site.box.identities / "passwd").read_text()
    for name in ("edge-alarm", "edge-video", "installer"):
        password = (site.box.identities / name).read_text().strip()
        assert f"{name}:$7$" in passwd and password not in passwd
    acl = (site.box.conf_path.parent / "run" / "broker.acl").read_text()
    video = acl.split("user edge-video\n", 1)[1].split("\n\n", 1)[0].splitlines()
    writes = [line.split()[2] for line in video if line.startswith("topic write")]
    for forbidden in ("edge/events", "edge/up/events", "edge/up/cmd/result", "edge/down/ack"):
        assert forbidden not in writes
    assert not [w for w in writes if w.startswith(("edge/local", "edge/sim", "edge/alarm"))]


def _raw(payload: dict[str, Any] | str) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload)
