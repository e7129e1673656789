"""The box's web server gives edge-alarm's diagnostics as JSON (``/api/diag``, for the
installer page) and in the Prometheus text format (``/metrics``), both behind the same login
as the rest, both parsed strictly: the JSON as JSON, the metrics by prometheus_client's own
text parser.

The site is real: `edge run alarm` publishes its report on the generated box broker, `edge
run video` (whose web server this is) follows it; HTTP goes over a real socket with the
per-box users file.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.broker import free_port
from support.site import SITE, Site

from edge.config.live import WebConfig
from edge.web.credentials import set_password
from edge.web.metrics import render
from edge.web.server import WebServer

PASSWORD = "correct horse battery"
WEB = """
[[video.cameras]]
id = "yard"
source = "synthetic"
url = "walker"
width = 320
height = 240
fps = 5
gop_s = 1

[web]
listen = "127.0.0.1"
port = {port}
https = false
credentials_file = "{users}"
"""


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async def main() -> tuple[int, str, str]:
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.text()

    return asyncio.run(main())


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    tmp = tmp_path_factory.mktemp("metrics")
    users = tmp / "web-users"
    set_password(users, "installer", PASSWORD, site_id=SITE)
    port = free_port()
    site = Site(tmp, extra=WEB.format(port=port, users=users))
    try:
        site.start_video()
        yield site, f"http://127.0.0.1:{port}"
    finally:
        site.close()


def wait_report(url: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = get(f"{url}/api/diag", basic("installer", PASSWORD))
        if status == 200:
            return json.loads(body)  # type: ignore[no-any-return]
        assert status == 503 and "edge-alarm" in body, (status, body)
        assert time.monotonic() < deadline, "no report on /api/diag"
        time.sleep(0.5)


def test_both_routes_need_the_login(web: tuple[Site, str]) -> None:
    _, url = web
    for path in ("/metrics", "/api/diag"):
        assert get(url + path)[0] == 401
        assert get(url + path, basic("installer", "wrong password"))[0] == 401


def test_api_diag_is_edge_alarms_report_with_its_age(web: tuple[Site, str]) -> None:
    _, url = web
    report = wait_report(url)
    assert report["v"] == 1 and report["site"] == SITE and report["source"] == "edge-alarm"
    assert report["stale"] is False and 0 <= report["age_s"] < 30
    checks = {(f["check"], f["scope"]): f for f in report["findings"]}
    assert checks[("service.alarm", "box")]["status"] == "ok"
    assert ("camera.video", "yard") in checks and ("zone.loop", "hall") in checks
    for f in report["findings"]:
        assert f["status"] in ("ok", "unknown", "warn", "fail")
        assert f["status"] == "ok" or f["remedy"] or f["status"] == "unknown"


def test_metrics_parse_and_carry_the_same_figures(web: tuple[Site, str]) -> None:
    _, url = web
    wait_report(url)
    status, ctype, text = get(f"{url}/metrics", basic("installer", PASSWORD))
    assert status == 200 and ctype.startswith("text/plain") and "version=0.0.4" in ctype
    found = families(text)  # raises on anything prometheus_client cannot read
    assert found["edge_diag_report_available"].samples[0].value == 1
    assert found["edge_diag_report_age_seconds"].samples[0].value < 30
    states = {
        (s.labels["check"], s.labels["scope"], s.labels["status"]): s.value
        for s in found["edge_diag_check_status"].samples
    }
    assert states[("service.alarm", "box", "ok")] == 1
    assert states[("service.alarm", "box", "fail")] == 0
    for (check, scope, _), _v in states.items():  # exactly one status per finding
        assert sum(states[(check, scope, s)] for s in ("ok", "unknown", "warn", "fail")) == 1
    disk = found["edge_diag_system_disk_free_bytes"].samples[0]
    assert disk.labels == {"site": SITE, "scope": "box"} and disk.value > 1024 * 1024
    assert found["edge_diag_service_alarm_uptime_seconds"].samples[0].value >= 0
    # The same findings as /api/diag (taken within one report period of each other).
    report = json.loads(get(f"{url}/api/diag", basic("installer", PASSWORD))[2])
    counts = {s.labels["status"]: s.value for s in found["edge_diag_findings"].samples}
    assert sum(counts.values()) == len(report["findings"])


def test_a_report_with_awkward_values_still_parses() -> None:
    report = {
        "ts": "2026-01-01T00:00:00+00:00",
        "findings": [
            {
                "check": "camera.video",
                "scope": 'lens "1"\\back\nline',
                "status": "warn",
                "evidence": {
                    "fps": 4.5,
                    "age_s": 12,
                    "latency_ms": 250,
                    "up": True,
                    "bands": {"normal": [1, 2]},
                    "nan": float("nan"),
                    "word": "covered",
                },
            },
            {"check": "weird-check.x", "scope": "box", "status": "nonsense", "evidence": None},
        ],
    }
    found = families(render(report, "site-x", now=1767225600 + 60))
    assert found["edge_diag_report_age_seconds"].samples[0].value == 60
    scope = found["edge_diag_camera_video_fps"].samples[0].labels["scope"]
    assert scope == 'lens "1"\\back\nline'
    assert found["edge_diag_camera_video_latency_seconds"].samples[0].value == 0.25
    assert found["edge_diag_camera_video_up"].samples[0].value == 1
    assert "edge_diag_camera_video_nan" not in found and "edge_diag_camera_video_word" not in found
    states = [s for s in found["edge_diag_check_status"].samples if s.value == 1]
    assert [s.labels["status"] for s in states] == ["warn"]  # "nonsense" is no status
    empty = families(render(None, "site-x"))
    assert empty["edge_diag_report_available"].samples[0].value == 0


class _NoHub:
    """What the web server needs of the live hub for these routes: the audit of refusals."""

    def audit(self, body: dict[str, Any]) -> None:
        pass


def test_api_diag_says_why_when_edge_alarm_published_nothing(tmp_path: Path) -> None:
    users = tmp_path / "web-users"
    set_password(users, "installer", PASSWORD, site_id="t-site")
    cfg = WebConfig(listen="127.0.0.1", port=free_port(), https=False, credentials_file=str(users))

    async def main() -> tuple[tuple[int, str], tuple[int, str]]:
        server = WebServer(cfg, _NoHub(), site_id="t-site")  # type: ignore[arg-type]
        await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                auth = basic("installer", PASSWORD)
                async with http.get(f"{server.url}/api/diag", headers=auth) as r:
                    diag = (r.status, await r.text())
                async with http.get(f"{server.url}/metrics", headers=auth) as r:
                    metrics = (r.status, await r.text())
        finally:
            await server.stop()
        return diag, metrics

    diag, metrics = asyncio.run(main())
    assert diag[0] == 503 and "systemctl status edge-alarm" in diag[1]
    assert metrics[0] == 200 and "edge_diag_report_available" in metrics[1]
