"""`edge diag bundle`: what the support archive holds, that no secret is in it, its bounds
and its mode — through the real CLI, with a site that has every kind of secret file.

journald does not run in this container; where the test needs its lines, a stand-in
`journalctl` on PATH prints what journald would (a log line that leaked a secret) and records
the arguments it was given: the system's boundary, like the simulated pins.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from support.central import central_section
from support.pki import make_pki
from support.site import toml_table

from edge.bus import passwd_file
from edge.diag.bundle import CAPS
from edge.events import Event, Kind
from edge.journal import Journal
from edge.web.credentials import set_password

EDGE = str(Path(sys.executable).with_name("edge"))
DC09_KEY = "00112233445566778899AABBCCDDEEFF"
TURN_PASSWORD = "turn-Pa55word-9"
TURN_REST_SECRET = "north-gate-shared-secret"
ONVIF_PASSWORD = "onvif-Cam3ra-pw"
RTSP_PASSWORD = "rtsp-inline-S3cret"
WEB_PASSWORD = "Quartz-Lantern-Meadow-71"


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def make_site(tmp: Path, *, onvif_mode: int = 0o600) -> tuple[Path, dict[str, str]]:
    """A site naming a DC-09 key, TURN password and REST secret, an ONVIF password, an RTSP
    URL with an inline password, a central TLS key, bus identities and web users. Returns its
    file and every secret in it, by name."""
    secrets = tmp / "secrets"
    secrets.mkdir()
    data = tmp / "data"
    pki = make_pki(tmp / "pki", ("site-a",))
    central = central_section(pki, "site-a", 1883)
    ids = tmp / "ids"
    passwd_file.ensure(ids, ["edge-alarm", "edge-video", "edge-sim", "installer"])
    passwd_file.write_passwd(ids)
    text = f"""
[site]
id = "site-a"
timezone = "Europe/Paris"

[paths]
data_dir = "{data}"
run_dir = "{tmp / "run"}"

[bus]
url = "mqtt://127.0.0.1:1"
identities_dir = "{ids}"

[dc09]
account = "1234"
primary = {{ host = "127.0.0.1", port = 1 }}
key_file = "{secret_file(secrets / "dc09.key", DC09_KEY)}"

[[live.ice_servers]]
urls = ["turn:turn.example.net:3478"]
username = "box"
credential_file = "{secret_file(secrets / "turn-password", TURN_PASSWORD)}"

[[live.ice_servers]]
urls = ["turn:turn2.example.net:3478"]
rest_secret_file = "{secret_file(secrets / "turn-rest", TURN_REST_SECRET)}"

[web]
enabled = false
credentials_file = "{tmp / "web-users"}"

[[video.cameras]]
id = "gate"
source = "rtsp"
url = "rtsp://admin:{RTSP_PASSWORD}@192.0.2.10/stream1"

[video.cameras.onvif]
url = "http://192.0.2.10/onvif/ptz_service"
username = "admin"
password_file = "{secret_file(secrets / "onvif", ONVIF_PASSWORD, onvif_mode)}"
"""
    text += toml_table("central", central.model_dump())
    site = tmp / "site.toml"
    site.write_text(text)
    set_password(tmp / "web-users", "installer", WEB_PASSWORD, site_id="site-a")
    found = {
        "dc09 key": DC09_KEY,
        "dc09 key (lower case)": DC09_KEY.lower(),
        "TURN password": TURN_PASSWORD,
        "TURN REST secret": TURN_REST_SECRET,
        "ONVIF password": ONVIF_PASSWORD,
        "RTSP password": RTSP_PASSWORD,
        "web password": WEB_PASSWORD,
    }
    for name in ("edge-alarm", "edge-video", "edge-sim", "installer"):
        found[f"bus identity {name}"] = (ids / name).read_text().strip()
    web_line = (tmp / "web-users").read_text().strip()
    for i, field in enumerate(web_line.split(":")[-2:]):  # the salt and the hash
        found[f"web users field {i}"] = field
    key_lines = central.key_path().read_text().splitlines()
    for i, line in enumerate(key_lines[1:-1]):  # the PEM body, line by line
        found[f"central TLS key line {i}"] = line
    return site, found


def journalctl_standin(bindir: Path, lines: list[str]) -> Path:
    """A `journalctl` printing ``lines`` and recording its argv in argv.json."""
    bindir.mkdir(exist_ok=True)
    log = bindir / "lines.txt"
    log.write_text("".join(line + "\n" for line in lines))
    script = bindir / "journalctl"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(bindir / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"sys.stdout.write(open({str(log)!r}).read())\n"
    )
    script.chmod(0o755)
    return bindir


def bundle(
    site: Path, cwd: Path, *args: str, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_CONFIG"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [EDGE, "diag", "bundle", *args, "--config", str(site)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def written(done: subprocess.CompletedProcess[str]) -> tuple[Path, str]:
    assert done.returncode == 0, done.stderr
    m = re.fullmatch(r"(\S+\.tar\.gz) \((\d+ (?:B|KiB)|[\d.]+ MiB)\)\n", done.stdout)
    assert m, done.stdout
    return Path(m.group(1)), m.group(2)


def test_bundle_holds_report_journal_logs_config_versions_and_no_secret(tmp_path: Path) -> None:
    site, secrets = make_site(tmp_path)
    with Journal(tmp_path / "data" / "journal.db") as journal:
        journal.append_many([Event(Kind.TAMPER, zone_id=f"z{i}") for i in range(1199)])
        # A bug that put secrets into the journal: the bundle must still not carry them.
        journal.append(Event(Kind.TECHNICAL, details={"leak": f"{DC09_KEY} {TURN_PASSWORD}"}))
    bindir = journalctl_standin(
        tmp_path / "bin",
        [
            "2026-12-06T05:00:00+0100 box edge-alarm[101]: started",
            f"2026-12-06T05:00:01+0100 box edge-video[102]: camera gate: {RTSP_PASSWORD} refused",
        ],
    )
    done = bundle(site, tmp_path, path=f"{bindir}:{os.environ['PATH']}")
    archive, size = written(done)
    assert archive.parent == tmp_path and archive.name.startswith("edge-bundle-site-a-")
    st = archive.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert size.endswith(("KiB", "B"))  # small
    parts = members(archive)
    assert sorted(parts) == sorted(CAPS)

    report = json.loads(parts["diag.json"])
    assert report["site"] == "site-a" and report["findings"]
    broker = next(f for f in report["findings"] if f["check"] == "bus.broker")
    assert broker["status"] == "fail"  # made with the broker down: it says so

    rows = [json.loads(line) for line in parts["journal.jsonl"].decode().splitlines()]
    assert len(rows) == 1000 and rows[-1]["seq"] == 1200 and rows[0]["seq"] == 201

    argv = json.loads((bindir / "argv.json").read_text())
    assert argv == [
        "-uedge-alarm", "-uedge-video", "-uedge-broker", "-n", "2000", "-o", "short-iso",
        "--no-pager",
    ]  # fmt: skip
    assert b"edge-alarm[101]: started" in parts["services.log"]

    config = json.loads(parts["config.json"])
    assert config["dc09"]["key_file"].endswith("secrets/dc09.key")  # paths are kept
    assert config["live"]["ice_servers"][0]["credential_file"].endswith("turn-password")
    assert config["video"]["cameras"][0]["url"] == "rtsp://admin:***@192.0.2.10/stream1"
    assert config["central"]["key_file"] and config["web"]["credentials_file"]

    versions = json.loads(parts["versions.json"])
    assert versions["edge"] and versions["python"].startswith("3.")
    assert versions["mosquitto"] == "2.0.11" and "Debian" in versions["os"]

    readme = parts["README.txt"].decode()
    assert "[redacted]" in readme and re.search(r"\((\d+) match\(es\) taken out\)", readme)
    everything = b"".join(parts.values())
    leaked = [name for name, value in secrets.items() if value.encode() in everything]
    assert leaked == [], leaked
    assert b"[redacted]" in parts["journal.jsonl"] and b"[redacted]" in parts["services.log"]


def test_a_secret_file_outside_the_rule_is_still_taken_out(tmp_path: Path) -> None:
    site, _ = make_site(tmp_path, onvif_mode=0o644)  # readable by all: the rule refuses it
    with Journal(tmp_path / "data" / "journal.db") as journal:
        journal.append(Event(Kind.CAMERA_FAULT, details={"reason": ONVIF_PASSWORD}))
    done = bundle(site, tmp_path, path="/usr/bin:/bin")  # no journalctl stand-in
    parts = members(written(done)[0])
    assert ONVIF_PASSWORD.encode() not in b"".join(parts.values())
    readme = parts["README.txt"].decode()
    assert "secret file outside the rule" in readme and "chmod 600" in readme


def test_without_journald_the_archive_says_why(tmp_path: Path) -> None:
    site, _ = make_site(tmp_path)
    empty = tmp_path / "nobin"
    empty.mkdir()
    done = bundle(site, tmp_path, path=str(empty))
    parts = members(written(done)[0])
    assert b"journalctl is not installed here" in parts["services.log"]
    assert "no journalctl on this machine" in parts["README.txt"].decode()
    assert "no journal at" in parts["README.txt"].decode()  # and no journal yet either


def test_size_is_bounded_newest_kept(tmp_path: Path) -> None:
    site, _ = make_site(tmp_path)
    blob = "x" * 8000
    with Journal(tmp_path / "data" / "journal.db") as journal:
        journal.append_many([Event(Kind.TAMPER, details={"blob": blob}) for _ in range(1000)])
    noisy = [
        f"2026-12-06T05:00:00+0100 box edge-video[1]: line {i} {'y' * 200}" for i in range(60_000)
    ]
    bindir = journalctl_standin(tmp_path / "bin", noisy)
    done = bundle(site, tmp_path, path=f"{bindir}:{os.environ['PATH']}")
    archive, _ = written(done)
    parts = members(archive)
    for name, data in parts.items():
        assert len(data) <= CAPS[name] + 64, (name, len(data))
    assert sum(len(d) for d in parts.values()) <= sum(CAPS.values()) + 1024
    rows = [json.loads(line) for line in parts["journal.jsonl"].decode().splitlines()]
    assert rows[-1]["seq"] == 1000 and len(rows) < 1000  # cut at the oldest end
    assert parts["services.log"].decode().rstrip().endswith("line 59999 " + "y" * 200)
    readme = parts["README.txt"].decode()
    assert "journal.jsonl cut at 4096 KiB" in readme and "services.log cut at 8192 KiB" in readme
    print(f"\nbounded bundle: {archive.stat().st_size / 1024:.0f} KiB compressed")


def test_never_overwrites_and_says_where_it_cannot_write(tmp_path: Path) -> None:
    site, _ = make_site(tmp_path)
    taken = tmp_path / "mine.tar.gz"
    taken.write_text("keep me")
    done = bundle(site, tmp_path, "--output", str(taken), path="/usr/bin:/bin")
    assert done.returncode == 73 and "already exists" in done.stderr
    assert taken.read_text() == "keep me"
    folder = tmp_path / "out"
    folder.mkdir()
    archive, _ = written(bundle(site, tmp_path, "--output", str(folder), path="/usr/bin:/bin"))
    assert archive.parent == folder
    named = written(bundle(site, tmp_path, "-o", str(tmp_path / "x.tar.gz"), path="/usr/bin:/bin"))
    assert named[0] == tmp_path / "x.tar.gz"
    missing = bundle(site, tmp_path, "-o", str(tmp_path / "no" / "x.tar.gz"), path="/usr/bin:/bin")
    assert missing.returncode == 73 and "is not a directory" in missing.stderr
    assert [p.name for p in folder.iterdir()] == [archive.name]  # no temporary file left


def test_edge_diag_itself_is_unchanged(tmp_path: Path) -> None:
    site, _ = make_site(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "EDGE_CONFIG"}
    done = subprocess.run(
        [EDGE, "diag", "--json", "--config", str(site)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2, done.stderr  # the broker is down: a failure
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["status"] == "fail"
    text = subprocess.run(
        [EDGE, "diag", "--config", str(site)], capture_output=True, text=True, env=env
    )
    assert text.returncode == 2
    assert re.match(
        r"site site-a: FAIL — .*\(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T, times in Europe/Paris\)",
        text.stdout,
    )
    assert re.search(
        r"^FAIL bus\.broker: .* \(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T\)$", text.stdout, re.M
    )
    stray = subprocess.run(
        [EDGE, "diag", "--output", "x", "--config", str(site)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert stray.returncode == 64 and "--output goes with `edge diag bundle`" in stray.stderr
