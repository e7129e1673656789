"""Tele-actions of a live session (edge.video.live.actions) against the real edge-alarm.

A real mosquitto, `edge run alarm` on a simulated site (outputs simulated at the pin), the
`edge` CLI to read output states and the journal, and a fake ONVIF camera at the HTTP boundary.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.alarm import BusWatcher, NotifySocket, start_alarm, stop, write_site
from support.broker import Broker, start_mosquitto
from support.fake_onvif import FakeOnvifCamera

from edge.bus import Bus
from edge.config import load_config
from edge.config.live import LiveConfig
from edge.config.video import Camera
from edge.video.live.actions import MAX_SESSIONS, RATE_LIMIT, RATE_WINDOW_S, Actions

EDGE = str(Path(sys.executable).with_name("edge"))
T = TypeVar("T")

EXTRA = """
[[outputs]]
id = "gate"
pin = 6

[[outputs]]
id = "fog"
pin = 13

[live.actions]
outputs = ["gate"]

[[video.cameras]]
id = "yard"
source = "synthetic"
url = "walker"

[video.cameras.onvif]
url = "{onvif_url}"
username = "admin"
password_file = "{password_file}"
presets = ["1", "2", "9"]

[[video.cameras]]
id = "porch"
source = "synthetic"
url = "walker"
"""


@dataclass
class Site:
    broker: Broker
    site: Path
    live: LiveConfig
    cameras: dict[str, Camera]
    camera: FakeOnvifCamera
    watch: BusWatcher

    def cli(self, *args: str) -> Any:
        out = subprocess.run(
            [EDGE, *args, "--config", str(self.site)], capture_output=True, text=True, timeout=20
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def output_on(self, output: str) -> bool:
        """What edge-alarm says of the output (`edge panel status --json`)."""
        return bool(json.loads(self.cli("panel", "status", "--json"))["outputs"][output]["on"])

    def journal(self, kind: str, user: str) -> list[dict[str, Any]]:
        rows = [json.loads(line) for line in self.cli("events", "--json").splitlines() if line]
        return [r for r in rows if r["kind"] == kind and r["details"].get("user") == user]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("actions")
    secret = tmp / "onvif-password"
    secret.write_text("cam-pass\n")
    secret.chmod(0o600)  # a secret file (edge.secret_files)
    with FakeOnvifCamera(username="admin", password="cam-pass") as camera:
        broker = start_mosquitto(tmp / "broker")
        extra = EXTRA.format(onvif_url=camera.url, password_file=secret)
        path = write_site(tmp, broker.url, extra=extra)
        cfg = load_config(path)
        notify = NotifySocket(tmp / "notify.sock")
        watch = BusWatcher("127.0.0.1", int(broker.port or 0))
        proc = start_alarm(path, tmp, notify)
        try:
            notify.wait_for("READY=1", timeout=10)
            watch.wait("edge/alarm/status", timeout=10)
            cameras = {c.id: c for c in cfg.video.cameras}
            yield Site(broker, path, cfg.live, cameras, camera, watch)
        finally:
            watch.close()
            stop(proc)
            notify.close()
            broker.stop()


@dataclass
class Reports:
    """The ``report`` callback: what edge-alarm would be asked to journal."""

    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, camera: str, payload: dict[str, Any]) -> None:
        self.items.append((camera, payload))

    def only(self, **expected: Any) -> dict[str, Any]:
        """The single report so far, checked against ``expected``; clears the list."""
        assert len(self.items) == 1, self.items
        camera, body = self.items.pop()
        assert camera == expected.pop("camera", "yard")
        assert body["v"] == 1 and body["event"] == "action"
        assert body["ts"].endswith("Z") and body["ts"][10] == "T"
        assert {k: body[k] for k in expected} == expected
        return body


def run(url: str, scenario: Callable[[Bus, Reports], Awaitable[T]]) -> tuple[T, Reports]:
    async def main() -> T:
        bus = Bus(url, f"test-actions-{secrets.token_hex(3)}")
        await bus.start()
        try:
            assert await bus.wait_connected(5)
            return await scenario(bus, reports)
        finally:
            await bus.close()

    reports = Reports()
    return asyncio.run(main()), reports


def actions_of(site: Site, bus: Bus, reports: Reports, **kw: Any) -> Actions:
    return Actions(bus=bus, live=site.live, cameras=site.cameras, report=reports, **kw)


def test_pulse_switches_the_output_and_is_journaled_with_the_operator(site: Site) -> None:
    async def scenario(bus: Bus, reports: Reports) -> dict[str, Any]:
        actions = actions_of(site, bus, reports)
        msg = '{"id": 7, "do": "output", "output": "gate", "op": "pulse", "seconds": 1}'
        reply = await actions.handle(msg, session="s1", camera="yard", operator="op-pulse")
        reports.only(session="s1", operator="op-pulse", do="output", target="gate", op="pulse")
        return reply

    reply, _ = run(site.broker.url, scenario)
    assert reply["id"] == 7 and reply["ok"] is True, reply
    assert reply["result"]["id"] == "gate" and reply["result"]["on"] is True
    assert reply["result"]["until"] is not None
    assert site.output_on("gate")
    (on,) = site.journal("output_on", "op-pulse")
    assert on["details"]["output"] == "gate" and on["details"]["seconds"] == 1
    deadline = time.monotonic() + 5
    while site.output_on("gate"):  # edge-alarm ends the pulse by itself
        assert time.monotonic() < deadline, "the pulse did not end"
        time.sleep(0.2)


def test_on_then_off_from_a_session(site: Site) -> None:
    states: list[bool] = []

    async def scenario(bus: Bus, reports: Reports) -> list[dict[str, Any]]:
        actions = actions_of(site, bus, reports)
        replies = []
        for n, op in enumerate(("on", "off")):
            raw = json.dumps({"id": f"a{n}", "do": "output", "output": "gate", "op": op})
            replies.append(await actions.handle(raw, session="s2", camera="porch", operator="op-2"))
            states.append(await asyncio.to_thread(site.output_on, "gate"))
            reports.only(camera="porch", id=f"a{n}", target="gate", op=op, ok=True, code=None)
        return replies

    replies, _ = run(site.broker.url, scenario)
    assert [(r["id"], r["ok"], r["result"]["on"]) for r in replies] == [
        ("a0", True, True),
        ("a1", True, False),
    ]
    assert states == [True, False]
    assert len(site.journal("output_on", "op-2")) == 1
    assert len(site.journal("output_off", "op-2")) == 1


def test_output_outside_the_allow_list_never_reaches_edge_alarm(site: Site) -> None:
    async def scenario(bus: Bus, reports: Reports) -> dict[str, Any]:
        actions = actions_of(site, bus, reports)
        site.watch.drain()
        fog = '{"id": 3, "do": "output", "output": "fog", "op": "on"}'
        reply = await actions.handle(fog, session="s3", camera="yard", operator="op-3")
        reports.only(target="fog", op="on", ok=False, code="not_allowed", id=3)
        gate = '{"id": 4, "do": "output", "output": "gate", "op": "off"}'
        assert (await actions.handle(gate, session="s3", camera="yard", operator="op-3"))["ok"]
        return reply

    reply, _ = run(site.broker.url, scenario)
    assert reply["code"] == "not_allowed" and reply["id"] == 3 and "gate" in reply["reason"]
    first = site.watch.wait("edge/live/action").json()  # the first command edge-alarm received
    assert (first["output"], first["action"], first["user"]) == ("gate", "off", "op-3")
    assert not site.output_on("fog") and site.journal("output_on", "op-3") == []


def gate(msg_id: Any, **fields: Any) -> str:
    """An output action on the gate, ``fields`` overriding or adding to it."""
    return json.dumps({"id": msg_id, "do": "output", "output": "gate", "op": "pulse", **fields})


MALFORMED: list[tuple[str | bytes, str, Any, str]] = [
    ("not json{", "bad_json", None, "not JSON"),
    (b"\xff\xfe{}", "bad_json", None, "not JSON"),
    ("[1, 2]", "bad_json", None, "JSON object"),
    ("[" * 1500, "bad_json", None, "not JSON"),
    (gate(1).replace("}", ', "seconds": NaN}'), "bad_json", None, "NaN is not JSON"),
    ('{"do": "output", "output": "gate", "op": "on"}', "bad_id", None, '"id" must be'),
    (gate(True), "bad_id", None, "whole number"),
    (gate("x" * 65), "bad_id", None, "64"),
    ('{"id": 2, "do": "reboot"}', "unknown_do", 2, '"output" or "ptz"'),
    (gate(3, op="toggle"), "bad_arguments", 3, "on, off, pulse"),
    (gate(4, seconds=0), "bad_arguments", 4, "1 to 3600"),
    (gate(5, seconds=3601), "bad_arguments", 5, "1 to 3600"),
    (gate(6, seconds="5"), "bad_arguments", 6, "whole number"),
    (gate(7, op="off", seconds=5), "bad_arguments", 7, "does not apply"),
    (gate(8, speed=2), "bad_arguments", 8, "unknown argument"),
    (gate(9, output="Gate/#"), "bad_arguments", 9, "must be an id"),
    ('{"id": "p", "do": "ptz", "preset": "<x/>"}', "bad_arguments", "p", "preset token"),
    ('{"id": "q", "do": "ptz", "preset": "1", "zoom": 2}', "bad_arguments", "q", "unknown"),
    (gate(10, pad="x" * 2100), "too_large", None, "2048"),
]


def test_malformed_messages_are_refused_and_each_reported_once(site: Site) -> None:
    async def scenario(bus: Bus, reports: Reports) -> list[dict[str, Any]]:
        actions = actions_of(site, bus, reports)
        site.watch.drain()
        replies = []
        for n, (raw, *_) in enumerate(MALFORMED):
            replies.append(await actions.handle(raw, session=f"m{n}", camera="yard", operator="o"))
            reports.only(session=f"m{n}", ok=False, code=replies[-1]["code"], id=replies[-1]["id"])
        return replies

    replies, _ = run(site.broker.url, scenario)
    for reply, (raw, code, echoed, words) in zip(replies, MALFORMED, strict=True):
        assert (reply["ok"], reply["code"], reply["id"]) == (False, code, echoed), raw
        assert words in reply["reason"] and "Traceback" not in reply["reason"]
    with pytest.raises(TimeoutError):  # none of them was passed on to edge-alarm
        site.watch.wait("edge/live/action", timeout=0.3)


def test_edge_alarm_not_answering_is_unavailable(broker: Broker) -> None:
    """Nobody serves edge/live/action on this broker: edge-alarm is stopped."""
    cams: dict[str, Camera] = {}
    live = LiveConfig.model_validate({"actions": {"outputs": ["gate"]}})

    async def scenario(bus: Bus, reports: Reports) -> tuple[dict[str, Any], float]:
        actions = Actions(bus=bus, live=live, cameras=cams, report=reports, alarm_timeout=0.5)
        started = time.monotonic()
        msg = '{"id": "u1", "do": "output", "output": "gate", "op": "on"}'
        reply = await actions.handle(msg, session="s", camera="yard", operator="op")
        reports.only(id="u1", target="gate", ok=False, code="unavailable")
        return reply, time.monotonic() - started

    (reply, took), _ = run(broker.url, scenario)
    assert reply["id"] == "u1" and reply["code"] == "unavailable"
    assert "edge-alarm did not answer within 0.5 s" in reply["reason"]
    assert 0.5 <= took < 2.0


def test_rate_limit_per_session_bounded_and_forgettable(site: Site) -> None:
    now = [1000.0]

    async def scenario(bus: Bus, reports: Reports) -> None:
        actions = actions_of(site, bus, reports, clock=lambda: now[0])

        async def send(n: int, session: str = "busy") -> str:
            raw = f'{{"id": {n}, "do": "output", "output": "fog", "op": "on"}}'
            reply = await actions.handle(raw, session=session, camera="yard", operator="op")
            assert reply["id"] == n
            return str(reply["code"])

        assert [await send(n) for n in range(RATE_LIMIT)] == ["not_allowed"] * RATE_LIMIT
        assert [await send(n) for n in (90, 91, 92)] == ["rate"] * 3
        assert len(reports.items) == RATE_LIMIT + 1  # a run of rate refusals: one report
        assert reports.items[-1][1]["code"] == "rate" and reports.items[-1][1]["id"] == 90
        assert await send(93, session="other") == "not_allowed"  # sessions are independent
        now[0] += RATE_WINDOW_S
        assert await send(94) == "not_allowed"
        assert await send(95) == "not_allowed"
        now[0] += 1
        actions.forget("busy")
        assert await send(96) == "not_allowed"
        for n in range(MAX_SESSIONS * 2):
            await send(n, session=f"viewer-{n}")
        assert actions.tracked_sessions == MAX_SESSIONS

    run(site.broker.url, scenario)


def test_ptz_presets_through_the_onvif_camera(site: Site) -> None:
    cam = site.camera

    async def scenario(bus: Bus, reports: Reports) -> list[dict[str, Any]]:
        actions = actions_of(site, bus, reports)
        off = LiveConfig.model_validate({"actions": {"ptz": False}})
        no_ptz = Actions(bus=bus, live=off, cameras=site.cameras, report=reports)
        out = []
        for session_cam, raw, acts in (
            ("yard", '{"id": 1, "do": "ptz", "preset": "2"}', actions),
            ("porch", '{"id": 2, "do": "ptz", "preset": "1", "camera": "yard"}', actions),
            ("yard", '{"id": 3, "do": "ptz", "preset": "3"}', actions),
            ("yard", '{"id": 4, "do": "ptz", "preset": "9"}', actions),
            ("porch", '{"id": 5, "do": "ptz", "preset": "1"}', actions),
            ("yard", '{"id": 6, "do": "ptz", "preset": "1", "camera": "attic"}', actions),
            ("yard", '{"id": 7, "do": "ptz", "preset": "1"}', no_ptz),
        ):
            out.append(await acts.handle(raw, session="p", camera=session_cam, operator="op-p"))
            target = json.loads(raw).get("camera", session_cam) + ":" + json.loads(raw)["preset"]
            rep = reports.only(camera=session_cam, do="ptz", op="goto", target=target)
            assert (rep["ok"], rep["code"]) == (out[-1]["ok"], out[-1].get("code"))
        return out

    replies, _ = run(site.broker.url, scenario)
    assert replies[0] == {"id": 1, "ok": True, "result": {"camera": "yard", "preset": "2"}}
    assert replies[1]["ok"] and replies[1]["result"] == {"camera": "yard", "preset": "1"}
    codes = [(r["id"], r.get("code")) for r in replies[2:]]
    assert codes == [
        (3, "not_allowed"),
        (4, "fault"),
        (5, "no_ptz"),
        (6, "unknown_camera"),
        (7, "not_allowed"),
    ]
    assert "preset 9 does not exist" in replies[3]["reason"]
    assert cam.gotos == [("Profile_1", "2"), ("Profile_1", "1")]
    assert cam.requests == 3  # the refused ones never reached the camera
