"""Failing arming-relevant diagnostics refuse arming, like an open zone; a forced arming goes
through and is journaled with who forced it, and over which faults.

First the panel's rule on its own (pure state, exact), then the real chain: `edge run alarm`
(with its bridge to a central mosquitto) runs the checks, a fire loop set out of band with
`edge sim set` fails ``zone.loop`` after its hold-off, `edge panel arm` is refused with the
reason, `edge panel arm --force` arms and journals ``arm_forced`` naming the installer, and
a signed central ``arm`` with ``force`` names the operator.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from support.site import SITE, Site

from edge.alarm.panel import AlarmPanel
from edge.alarm.partitions import Blocker
from edge.config import parse_config
from edge.events import Kind

FIRE_ZONE = """
[[zones]]
id = "smoke"
name = "Smoke detector"
type = "fire"
input = { kind = "adc", channel = 1, wiring = "deol", debounce_ms = 20 }
"""

PANEL_SITE = """
[site]
id = "arm-test"
[hardware]
backend = "sim"
[[partitions]]
id = "main"
exit_delay_s = 0
[[partitions]]
id = "annex"
exit_delay_s = 0
[[zones]]
id = "door"
type = "instant"
input = { kind = "gpio", pin = 17 }
[[zones]]
id = "smoke"
type = "fire"
input = { kind = "gpio", pin = 18 }
[[zones]]
id = "shed"
type = "fire"
partition = "annex"
input = { kind = "gpio", pin = 19 }
"""


def panel() -> AlarmPanel:
    return AlarmPanel(parse_config(PANEL_SITE))


def kinds(out: Any) -> list[str]:
    return [e.kind.value for e in out.events]


def test_a_box_fault_refuses_arming_with_its_reason_and_force_journals_who() -> None:
    p = panel()
    p.blockers = (Blocker("system.disk", "box", "data disk 1% free (9 MB of 900 MB)"),)
    refused = p.arm("main", "full", 1.0, source="command", user="installer")
    assert not refused.ok
    assert "data disk 1% free" in refused.reason and "system.disk" in refused.reason
    assert "force" in refused.reason
    assert kinds(refused) == ["arm_refused"]
    assert refused.events[0].details["faults"][0]["check"] == "system.disk"
    assert p.partition_status("main")["state"] == "disarmed"
    assert p.partition_status("main")["faults"][0]["check"] == "system.disk"
    forced = p.arm("main", "full", 2.0, force=True, source="command", user="installer")
    assert forced.ok and kinds(forced) == ["arm_forced", "armed"]
    details = forced.events[0].details
    assert details["user"] == "installer" and details["faults"][0]["check"] == "system.disk"
    assert Kind.ARM_FORCED.spec.transmit  # the station learns who armed over which fault


def test_a_schedule_refused_by_a_fault_is_sent_as_arm_failed() -> None:
    p = panel()
    p.blockers = (Blocker("dc09.path", "primary", "no alarm receiver path works"),)
    out = p._arm(p.partitions["main"], "full", 1.0, False, {"source": "schedule"})
    assert not out.ok and kinds(out) == ["arm_failed"]


def test_a_zone_fault_blocks_only_its_partition_and_not_twice_for_burglary_zones() -> None:
    p = panel()
    p.blockers = (
        Blocker("zone.loop", "shed", "zone shed: loop out of band", zone="shed"),
        Blocker("zone.loop", "door", "zone door: loop out of band", zone="door"),
    )
    # shed is in annex; door is a burglary zone whose open-zone rule already applies live.
    assert p.arm("main", "full", 1.0).ok
    out = p.arm("annex", "full", 1.0)
    assert not out.ok and "zone shed" in out.reason
    p.bypass("shed", 2.0)
    assert p.arm("annex", "full", 3.0).ok  # a bypassed zone blocks nothing


def test_open_zones_and_faults_are_named_together() -> None:
    p = panel()
    p.loop_changed("door", "alarm", 0.5)
    p.blockers = (Blocker("system.clock", "box", "the clock was never set"),)
    out = p.arm("main", "full", 1.0)
    assert not out.ok
    assert "zone door" in out.reason and "the clock was never set" in out.reason
    assert out.events[0].details["zones"] == ["door"]


# -- the real chain ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = Site(tmp_path_factory.mktemp("arming"), extra=FIRE_ZONE)
    yield s
    s.close()


def report_with(site: Site, check: str, scope: str, status: str, timeout: float) -> dict[str, Any]:
    """edge-alarm's retained report once it says ``check@scope`` is ``status``."""
    watch = site.watcher(("edge/diag/report",))
    deadline = time.monotonic() + timeout
    last: Any = None
    try:
        while time.monotonic() < deadline:
            try:
                last = watch.wait("edge/diag/report", max(0.1, deadline - time.monotonic())).json()
            except TimeoutError:
                break
            for f in last["findings"]:
                if (f["check"], f["scope"], f["status"]) == (check, scope, status):
                    return last  # type: ignore[no-any-return]
    finally:
        watch.close()
    brief = [(f["check"], f["scope"], f["status"]) for f in (last or {}).get("findings", [])]
    raise AssertionError(f"{check}@{scope} not {status} within {timeout} s: {brief}")


def test_fire_loop_out_of_band_refuses_arming_until_forced(site: Site) -> None:
    assert site.cli("sim", "set", "smoke", "2000").returncode == 0  # between the bands
    started = time.monotonic()
    report = report_with(site, "zone.loop", "smoke", "fail", timeout=30)
    print(f"zone.loop@smoke reported fail after {time.monotonic() - started:.1f} s")
    assert report["reason"] == "change"  # sent to the station too
    refused = site.cli("panel", "arm")
    assert refused.returncode != 0
    words = refused.stderr + refused.stdout
    assert "smoke" in words and "force" in words, words
    rows = site.journal()
    assert rows[-1]["kind"] == "arm_refused" and rows[-1]["details"]["faults"]
    forced = site.cli("panel", "arm", "--force")
    assert forced.returncode == 0, forced.stderr
    rows = site.journal()
    arm_forced = [r for r in rows if r["kind"] == "arm_forced"]
    assert arm_forced and arm_forced[-1]["details"]["user"] == "installer"
    assert arm_forced[-1]["details"]["faults"][0]["scope"] == "smoke"
    assert "armed" in [r["kind"] for r in rows if r["seq"] > arm_forced[-1]["seq"]]
    sent = site.event("arm_forced")  # it reaches the central station
    assert sent["details"]["faults"][0]["check"] == "zone.loop"
    assert site.cli("panel", "disarm").returncode == 0


def test_a_central_operator_forces_arming_and_is_named(site: Site) -> None:
    nonce_refused = site.command("arm", {"partition": "main"})
    site.console.publish(f"sites/{SITE}/cmd/arm", json.dumps(nonce_refused))
    refused = site.result(nonce_refused["nonce"])
    assert refused["ok"] is False and "smoke" in refused["reason"]
    forced = site.command("arm", {"partition": "main", "force": True}, operator="op-42")
    site.console.publish(f"sites/{SITE}/cmd/arm", json.dumps(forced))
    assert site.result(forced["nonce"])["ok"] is True
    rows = [r for r in site.journal() if r["kind"] == "arm_forced"]
    assert rows[-1]["details"]["user"] == "op-42"
    assert site.cli("panel", "disarm").returncode == 0
    assert site.cli("sim", "restore", "smoke").returncode == 0
    report_with(site, "zone.loop", "smoke", "ok", timeout=20)  # recovery shows at once
    assert site.cli("panel", "arm").returncode == 0
