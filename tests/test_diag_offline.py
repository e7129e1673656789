"""`edge diag` on a box whose services are down: what it reads from the disk alone.

Each fault is real: a journal row edited and rows removed with the sqlite3 API (as someone
with a shell would), events owed for 6 and 40 minutes in the real outbox file, certificates
that expire in 10 days or expired yesterday, a clip store above its quota while edge-video
does not run to enforce it, and edge-alarm killed three times in a row. No broker runs, so
`edge diag --check NAME` also shows that a check needs no service to answer.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from support.alarm import start_alarm, stop, write_site
from support.broker import free_port
from support.central import central_section
from support.diag import diag, text
from support.pki import make_pki
from support.site import toml_table

from edge.events import Event, Kind
from edge.journal import Journal
from edge.uplink.outbox import Outbox, outbox_path

SITE = "site-a"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def offline_site(tmp: Path, extra: str = "") -> Path:
    """A site whose box broker is not running (a free port nobody listens on)."""
    return write_site(tmp, f"mqtt://127.0.0.1:{free_port()}", extra=extra, site_id=SITE)


def ago(**kw: float) -> str:
    when = now() - dt.timedelta(**kw)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def tamper(db_path: Path, sql: str, *args: object) -> None:
    """Change the journal behind edge's back, as someone with a shell would: lift its
    guards (triggers), make the change, and put the guards back."""
    db = sqlite3.connect(db_path)
    with db:
        guards = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
        for name, _ in guards:
            db.execute(f"DROP TRIGGER {name}")
        db.execute(sql, args)
        for _, ddl in guards:
            db.execute(ddl)
    db.close()


def test_journal_chain_is_verified_incrementally_and_tampering_is_named(tmp_path: Path) -> None:
    site = offline_site(tmp_path)
    path = tmp_path / "data" / "journal.db"
    with Journal(path) as journal:
        for i in range(50):
            journal.append(Event(Kind.TECHNICAL, details={"i": i}))
    first = diag(site, "journal.integrity")
    assert first.rc == 0, first.brief()
    found = first.finding("journal.integrity")
    assert found["status"] == "ok"
    assert found["evidence"]["checked_now"] == 50
    assert found["evidence"]["verified_to"] == 50

    with Journal(path) as journal:
        for i in range(20):
            journal.append(Event(Kind.TECHNICAL, details={"i": 50 + i}))
    again = diag(site, "journal.integrity").finding("journal.integrity")
    assert again["evidence"]["checked_now"] == 20  # only the new rows
    assert again["evidence"]["verified_to"] == 70

    with Journal(path) as journal:
        for i in range(10):
            journal.append(Event(Kind.TECHNICAL, details={"i": 70 + i}))
    tamper(path, "UPDATE events SET details = ? WHERE seq = ?", '{"i": 999}', 75)
    broken = diag(site, "journal.integrity")
    assert broken.rc == 2
    found = broken.finding("journal.integrity")
    assert found["status"] == "fail"
    assert "seq 75" in found["summary"] and "edited" in found["summary"]
    assert "edge events verify" in found["remedy"]
    assert found["evidence"]["first_bad_seq"] == 75
    # It stays reported: a broken chain does not heal by being looked at again.
    assert diag(site, "journal.integrity").rc == 2
    out = text(site, "journal.integrity")
    assert "FAIL journal.integrity" in out.stdout and "call a technician" in out.stdout


def test_events_removed_from_the_end_of_the_journal_are_found(tmp_path: Path) -> None:
    site = offline_site(tmp_path)
    path = tmp_path / "data" / "journal.db"
    with Journal(path) as journal:
        for i in range(30):
            journal.append(Event(Kind.TECHNICAL, details={"i": i}))
    assert diag(site, "journal.integrity").rc == 0
    tamper(path, "DELETE FROM events WHERE seq > ?", 25)  # the chain itself still holds
    found = diag(site, "journal.integrity").finding("journal.integrity")
    assert found["status"] == "fail"
    assert "removed from its end" in found["summary"], found


def test_a_journal_near_its_bound_is_a_warning(tmp_path: Path) -> None:
    site = offline_site(tmp_path, "\n[journal]\nmax_events = 10000\nkeep_events = 500\n")
    with Journal(tmp_path / "data" / "journal.db", keep_events=500, max_events=10_000) as journal:
        for start in range(0, 9_400, 1_000):
            journal.append_many(
                [
                    Event(Kind.TECHNICAL, details={"i": i})
                    for i in range(start, min(start + 1_000, 9_400))
                ]
            )
    first = diag(site, "journal.size")
    assert first.status("journal.size") == "ok", first.brief()  # 9,400 rows: 94 %
    with Journal(tmp_path / "data" / "journal.db", keep_events=500, max_events=10_000) as journal:
        journal.append_many([Event(Kind.TECHNICAL) for _ in range(200)])
    got = diag(site, "journal.size")
    assert got.rc == 1, got.brief()
    found = got.finding("journal.size")
    assert "9600 events in the journal (96% of journal.max_events" in found["summary"]
    assert "about to be dropped" in found["remedy"] and "journal.max_events" in found["remedy"]


def test_outbox_backlog_is_read_from_the_file_while_edge_alarm_is_down(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", (SITE,))
    extra = toml_table("central", central_section(pki, SITE, free_port()).model_dump())
    extra += '\n[dc09]\naccount = "AAA1"\nprimary = { host = "127.0.0.1", port = 9 }\n'
    site = offline_site(tmp_path, extra)
    data = tmp_path / "data"
    with Journal(data / "journal.db") as journal:
        old = journal.append(Event(Kind.PANIC, zone_id="panic", ts=ago(minutes=40)))
        journal.append(Event(Kind.PANIC, zone_id="panic", ts=ago(minutes=6)))
        with Outbox(outbox_path(data), ["mqtt", "dc09"]) as outbox:
            assert outbox.catch_up(journal) == 2
            outbox.ack("dc09", [old.id])  # the receiver took the older one
    got = diag(site, "outbox.backlog")
    assert got.rc == 2, got.brief()
    mqtt = got.finding("outbox.backlog", "mqtt")
    assert mqtt["status"] == "fail"
    assert "2 event(s) wait for the central station, the oldest for 40 min" in mqtt["summary"]
    assert "central.link" in mqtt["remedy"]
    assert mqtt["evidence"]["from"] == "the outbox file"
    assert mqtt["evidence"]["oldest_seq"] == old.seq  # `edge events` shows it as #1
    dc09 = got.finding("outbox.backlog", "dc09")
    assert dc09["status"] == "warn"
    assert "1 event(s) wait for the alarm receiver, the oldest for 6 min" in dc09["summary"]
    assert "dc09.path" in dc09["remedy"]


def test_certificates_expiring_soon_or_expired_are_named(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", (SITE,))
    short = pki.ca.issue("short-life", SITE, not_after=now() + dt.timedelta(days=10))
    section = central_section(pki, SITE, free_port(), cert_file=short.cert.name)
    extra = toml_table("central", section.model_dump())
    # The local web server with a certificate of the site's own, which expired yesterday.
    extra += toml_table(
        "web",
        {"enabled": True, "https": True, "port": free_port(),
         "credentials_file": str(tmp_path / "web-users"),
         "tls_cert": str(pki.expired.cert), "tls_key": str(pki.expired.key)},
    )  # fmt: skip
    extra += '\n[[video.cameras]]\nid = "yard"\nsource = "synthetic"\nurl = "walker"\n'
    site = offline_site(tmp_path, extra)
    got = diag(site, "tls.certificates")
    assert got.rc == 2, got.brief()
    mine = got.finding("tls.certificates", "central-site")
    assert mine["status"] == "warn"
    assert "expires on" in mine["summary"] and "(10 days left)" in mine["summary"]
    assert "monitoring station's PKI" in mine["remedy"]
    assert got.status("tls.certificates", "central-ca") == "ok"
    web = got.finding("tls.certificates", "web")
    assert web["status"] == "fail" and "expired on" in web["summary"]
    assert "restart edge-video" in web["remedy"]


def test_clip_store_above_its_quota_without_edge_video_is_a_warning(tmp_path: Path) -> None:
    from edge.video.clip_index import ClipIndex
    from edge.video.clips import ClipInfo

    extra = (
        '\n[[video.cameras]]\nid = "yard"\nsource = "synthetic"\nurl = "walker"\n'
        "\n[video.clips]\nquota_mb = 64\n"
    )
    site = offline_site(tmp_path, extra)
    clips = tmp_path / "data" / "clips"
    clips.mkdir(parents=True)
    with ClipIndex(clips / "index.db") as index:
        for n in range(2):  # two clips of 40 MB recorded two minutes ago: 80 MB
            path = clips / f"clip-{n}.mp4"
            with path.open("wb") as f:
                f.truncate(40 * 1024 * 1024)
            info = ClipInfo(f"clip{n}", "yard", (f"ev{n}",), path, None, 5.0, 0.0, 15.0, 15.0,
                            path.stat().st_size, "0" * 64, 320, 240, 150)  # fmt: skip
            index.add(info, now() - dt.timedelta(minutes=2))
    got = diag(site, "clips.size")
    assert got.rc == 1, got.brief()
    found = got.finding("clips.size")
    assert found["status"] == "warn"
    assert "2 clip(s), 80 MB of the 64 MB quota" in found["summary"]
    assert "edge-video runs" in found["remedy"]


def journal_kinds(path: Path, kind: str) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1)
    try:
        return int(db.execute("SELECT COUNT(*) FROM events WHERE kind = ?", (kind,)).fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the schema is being written
    finally:
        db.close()


def test_edge_alarm_killed_again_and_again_is_a_crash_loop(tmp_path: Path) -> None:
    site = offline_site(tmp_path)
    path = tmp_path / "data" / "journal.db"
    for n, how in enumerate((signal.SIGTERM, signal.SIGKILL, signal.SIGKILL, signal.SIGKILL), 1):
        proc = start_alarm(site, tmp_path)
        deadline = time.monotonic() + 20
        while journal_kinds(path, "service_started") < n:
            assert proc.poll() is None, (tmp_path / "alarm.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "edge-alarm did not journal its start"
            time.sleep(0.1)
        time.sleep(0.5)  # past the start: its signal handlers are set
        os.kill(proc.pid, how)
        stop(proc)
        if n == 1:  # a clean stop: reported as such, not as a fault
            first = diag(site, "service.restarts")
            found = first.finding("service.restarts", "edge-alarm")
            assert found["status"] == "ok", found
            assert "stopped" in found["summary"] and "SIGTERM" in json.dumps(found).upper()
    got = diag(site, "service.restarts")
    assert got.rc == 2, got.brief()
    found = got.finding("service.restarts", "edge-alarm")
    assert found["status"] == "fail"
    assert "started 4 times" in found["summary"] and "keeps crashing" in found["summary"]
    assert "edge config check" in found["remedy"]
    assert found["evidence"]["unclean"] == 2  # the starts after the 2nd and 3rd kill
    assert got.status("service.restarts", "systemd") == "unknown"  # no systemd in a container


def test_the_file_names_the_checks_read_are_the_ones_the_services_write() -> None:
    """The checks name a few files and values themselves rather than import the services'
    modules (which pull in numpy, PyAV or OpenSSL: `edge diag` must start fast)."""
    from edge.alarm.zones import BYPASS_SWINGER
    from edge.diag.checks import journal_view, storage, tls, transmission, zones
    from edge.journal_file import JOURNAL_FILE
    from edge.uplink.outbox_schema import OUTBOX_FILE
    from edge.video.clip_index import CLIPS_DIR, INDEX_FILE
    from edge.web.tls import CERT_NAME

    assert journal_view.JOURNAL_FILE == JOURNAL_FILE
    assert transmission.OUTBOX_FILE == OUTBOX_FILE
    assert (storage.CLIPS_DIR, storage.CLIP_INDEX) == (CLIPS_DIR, INDEX_FILE)
    assert zones.SWINGER == BYPASS_SWINGER
    assert tls.WEB_CERT == CERT_NAME
