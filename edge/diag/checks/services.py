"""The services and the bus between them: is each one up and talking?"""

from __future__ import annotations

from edge.diag.checks.common import duration, stopped
from edge.diag.model import Finding, fail, ok, unknown
from edge.diag.registry import check
from edge.diag.sources import Sources


@check("bus.broker", holdoff_s=0, about="the box broker answers")
def broker(src: Sources) -> list[Finding]:
    if src.bus_error is not None:
        return [
            fail(
                "bus.broker",
                f"the box broker does not answer: {src.bus_error}",
                "`systemctl status edge-broker` and `journalctl -u edge-broker -n 30`; "
                "`systemctl restart edge-broker`. Without it no event leaves the box "
                "(they wait in the journal)",
                arming=True,
            )
        ]
    return [ok("bus.broker", "the box broker answers")]


@check("service.alarm", holdoff_s=0, about="edge-alarm is running and publishing its status")
def alarm(src: Sources) -> list[Finding]:
    if src.bus_error is not None:
        return [unknown("service.alarm", "cannot tell: the box broker does not answer")]
    if src.alarm is None:
        return [
            fail(
                "service.alarm",
                "edge-alarm publishes no status: the alarm service is not running",
                "`systemctl status edge-alarm`, `journalctl -u edge-alarm -n 50`; exit status "
                "78 means the site file is wrong (`edge config check`)",
                arming=True,
            )
        ]
    if src.alarm.get("running") is False or stopped(src):  # or its journal says so
        return [
            fail(
                "service.alarm",
                "edge-alarm stopped",
                "`systemctl start edge-alarm`; if it does not stay up, `journalctl -u edge-alarm`",
                arming=True,
            )
        ]
    uptime = float(src.alarm.get("uptime_s") or 0)
    ev = {"uptime_s": round(uptime), "version": src.alarm.get("version")}
    return [ok("service.alarm", f"edge-alarm up for {duration(uptime)}", evidence=ev)]


@check("service.video", holdoff_s=30, about="edge-video is running (when cameras are set)")
def video(src: Sources) -> list[Finding]:
    if not src.cfg.video.cameras:
        return []
    if src.bus_error is not None:
        return [unknown("service.video", "cannot tell: the box broker does not answer")]
    if src.video is None or src.video.get("running") is False:
        return [
            fail(
                "service.video",
                "edge-video is not running: no clip, no live view",
                "`systemctl status edge-video`, `journalctl -u edge-video -n 50`; "
                "`systemctl restart edge-video`",
            )
        ]
    return [ok("service.video", "edge-video is running")]


@check("central.link", holdoff_s=60, about="the bridge to the central station is up")
def link(src: Sources) -> list[Finding]:
    central = src.cfg.central
    if central is None or not central.enabled:
        return []
    if src.bus_error is not None:
        return [unknown("central.link", "cannot tell: the box broker does not answer")]
    if src.link == "1":
        return [ok("central.link", f"connected to the central station ({central.host})")]
    if src.link is None:
        return [unknown("central.link", "the bridge has not reported its state yet")]
    return [
        fail(
            "central.link",
            f"no connection to the central station ({central.host}:{central.port})",
            "check the box's network (`ping` the central host); `journalctl -u edge-broker` "
            "says whether the broker is unreachable or refuses the certificate "
            "(docs/bridge.md); events wait in the outbox meanwhile",
        )
    ]
