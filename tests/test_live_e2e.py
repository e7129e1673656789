"""Live view end to end, the way the central station uses it: signed `cmd/live` over the real
bridge (central mosquitto with TLS and the shipped ACL, box broker with the bridge we
generate), `edge run alarm` deciding the access policy and journaling, `edge run video`
streaming a synthetic camera, and an aiortc viewer in this process doing the signalling on
`sites/<id>/live/<session>/…`. Nothing in the box is patched."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from support.site import SITE, Site
from support.viewer import Viewer, recording_decoders

from edge.uplink.signing import private_key_from_seed, sign_command
from edge.video.frames import nal_units

pytestmark = pytest.mark.slow

LIVE = """
[[video.cameras]]
id = "yard"
source = "synthetic"
url = "walker"
width = 640
height = 360
fps = 15
gop_s = 2

[video.clips]
pre_s = 8
post_s = 8

[live]
policy = "after_alarm"
window_minutes = 15
viewers_per_camera = 1
idle_timeout_s = 5

[live.actions]
outputs = ["siren"]

[web]
enabled = false
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path, extra=LIVE)
    s.start_video()
    yield s
    s.close()


def central(topic: str) -> str:
    return f"sites/{SITE}/{topic}"


def ask(site: Site, name: str, args: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], str]:
    cmd = site.command(name, args, **kw)
    site.console.publish(central(f"cmd/{name}"), json.dumps(cmd))
    return site.result(cmd["nonce"], timeout=20), cmd["nonce"]


def journal_kinds(site: Site, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in site.journal() if e["kind"] == kind]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


async def watch(site: Site, session: str, seconds: float) -> Viewer:
    """Offer over MQTT, apply the answer, watch for ``seconds``; the data channel pulses."""
    viewer = Viewer(actions=True)
    offer = await viewer.offer()
    site.console.publish(
        central(f"live/{session}/offer"), json.dumps({"v": 1, "type": "offer", "sdp": offer})
    )
    msg = await asyncio.to_thread(site.console.expect, central(f"live/{session}/answer"), 15)
    await viewer.accept(json.loads(msg.payload)["sdp"])
    await asyncio.wait_for(viewer.first_frame.wait(), 10)
    reply = await viewer.action(
        json.dumps({"id": 7, "do": "output", "output": "siren", "op": "pulse", "seconds": 1})
    )
    viewer.reply = json.loads(reply)  # type: ignore[attr-defined]
    await asyncio.sleep(seconds)
    return viewer


def clip_units(site: Site) -> set[bytes]:
    """NAL units of every clip the box saved (MP4 holds them length-prefixed)."""
    units: set[bytes] = set()
    for path in (site.tmp / "alarm" / "data").rglob("*.mp4"):
        with av.open(str(path)) as container:
            for pkt in container.demux(video=0):
                data, i = bytes(pkt), 0
                while i + 4 <= len(data):
                    size = int.from_bytes(data[i : i + 4], "big")
                    units.add(data[i + 4 : i + 4 + size])
                    i += 4 + size
    return units


def test_live_view_policy_passthrough_audit_and_cap(site: Site) -> None:
    # Out of policy: no alarm yet, so the central station may not look.
    refused, _ = ask(site, "live", {"camera": "yard", "reason": "curiosity"}, operator="op-3")
    assert refused["ok"] is False and refused["code"] == "policy", refused
    assert "after an alarm" in refused["reason"]

    site.trip("panic")
    site.event("panic")

    result, session = ask(site, "live", {"camera": "yard", "reason": "levée de doute"})
    assert result["ok"] is True, (result.get("code"), result.get("reason"))
    assert result["result"]["session"] == session
    assert result["result"]["ice_servers"] == []  # nothing configured: no external STUN

    # The viewer cap (1) holds while the first session is open.
    capped, _ = ask(site, "live", {"camera": "yard", "reason": "second look"})
    assert capped["ok"] is False and capped["code"] == "viewer_cap", capped

    with recording_decoders() as received:
        viewer = asyncio.run(_watch_and_close(site, session))
    assert viewer.ttff_s is not None and viewer.ttff_s < 3.0
    assert len(viewer.frames) >= 25  # 2 s at 15 fps, and more
    assert {(w, h) for _, w, h in viewer.frames} == {(640, 360)}
    assert viewer.reply["ok"] is True and viewer.reply["id"] == 7, viewer.reply  # type: ignore[attr-defined]

    # Passthrough: every NAL unit the viewer received is byte for byte one the camera
    # produced (the panic alarm's clip holds them: pre 8 s + post 8 s around the session).
    deadline = time.monotonic() + 20
    sent = {u for frame in received for u in nal_units(frame) if u[0] & 0x1F not in (7, 8)}
    assert len(sent) >= 25
    while (missing := sent - clip_units(site)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not missing, f"{len(missing)} of {len(sent)} received NAL units are not the camera's"

    started = journal_kinds(site, "live_started")
    ended = journal_kinds(site, "live_ended")
    mine = [e["details"] for e in started if e["details"].get("session") == session]
    assert mine and mine[0]["operator"] == "op-17" and mine[0]["camera"] == "yard"
    assert mine[0]["reason"] == "levée de doute" and mine[0]["via"] == "central"
    end = next(e["details"] for e in ended if e["details"].get("session") == session)
    assert end["why"] == "viewer hung up" and end["connected"] is True
    assert end["start"] < end["end"] and end["frames"] >= 25

    refusals = [e["details"] for e in journal_kinds(site, "live_refused")]
    assert {r.get("code") for r in refusals} >= {"policy", "viewer_cap"}
    assert any(r.get("operator") == "op-3" for r in refusals)
    action = journal_kinds(site, "live_action")[0]["details"]
    assert action["operator"] == "op-17" and action["target"] == "siren" and action["ok"]
    on = [e for e in journal_kinds(site, "output_on") if e["details"].get("user") == "op-17"]
    assert on, "the tele-action did not switch the siren output in edge-alarm"


async def _watch_and_close(site: Site, session: str) -> Viewer:
    viewer = await watch(site, session, 2.0)
    site.console.publish(central(f"live/{session}/bye"), json.dumps({"v": 1}))
    await viewer.close()
    return viewer


def test_unauthorised_replayed_idle_and_patrol(site: Site) -> None:
    site.trip("panic")
    site.event("panic")

    forged = sign_command(
        private_key_from_seed(b"\x07" * 32),
        key_id="central-1",
        site=SITE,
        name="live",
        args={"camera": "yard"},
        operator="intruder",
    )
    site.console.publish(central("cmd/live"), json.dumps(forged))
    assert site.result(forged["nonce"])["code"] == "bad_signature"

    granted, session = ask(site, "live", {"camera": "yard"})
    assert granted["ok"] is True, granted
    replay = site.command("live", {"camera": "yard"}, nonce=session)
    site.console.publish(central("cmd/live"), json.dumps(replay))
    assert site.result(session)["code"] == "replayed"

    # Granted but never offered: closed after idle_timeout_s, and the console is told.
    bye = json.loads(site.console.expect(central(f"live/{session}/bye"), 15).payload)
    assert bye["code"] == "ended" and "never connected" in bye["reason"]

    refusals = [e["details"] for e in journal_kinds(site, "live_refused")]
    assert {"bad_signature", "replayed"} <= {r.get("code") for r in refusals}
    assert any(r.get("operator") == "intruder" for r in refusals)

    cmd = site.command("patrol", {"reason": "ronde"})
    site.console.publish(central("cmd/patrol"), json.dumps(cmd))
    got = until_both(site, central("cmd/result"), central(f"patrol/{cmd['nonce']}"))
    report, body = got[central("cmd/result")], got[central(f"patrol/{cmd['nonce']}")]
    assert report["ok"] is True and report["result"]["snapshots"] == 1, report
    shot = body["cameras"][0]
    assert shot["camera"] == "yard" and shot["up"] is True
    assert base64.b64decode(shot["jpeg"])[:2] == b"\xff\xd8"
    assert journal_kinds(site, "video_patrol")[0]["details"]["operator"] == "op-17"


def until_both(site: Site, *topics: str, timeout: float = 20) -> dict[str, Any]:
    """The first JSON message on each topic, whatever order they arrive in."""
    deadline, got = time.monotonic() + timeout, {}
    while len(got) < len(topics):
        msg = site.console.inbox.get(timeout=max(0.1, deadline - time.monotonic()))
        if msg.topic in topics and msg.topic not in got:
            got[msg.topic] = json.loads(msg.payload)
    return got


def test_unknown_session_offer_gets_a_bye(site: Site) -> None:
    session = uuid.uuid4().hex
    site.console.publish(central(f"live/{session}/offer"), json.dumps({"v": 1, "sdp": "v=0"}))
    bye = json.loads(site.console.expect(central(f"live/{session}/bye"), 15).payload)
    assert bye["code"] == "unknown_session"
