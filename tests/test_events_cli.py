"""`edge events`: list, filter, JSON, follow and verify, through the real argparse wiring."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from edge.commands import events as cmd
from edge.errors import EX_CONFIG, EX_USAGE
from edge.events import Event, Kind
from edge.journal import Journal, iso_utc

FOLLOW = """
import argparse, sys
from edge.commands import events
parent = argparse.ArgumentParser(add_help=False)
parent.add_argument("--config")
parser = argparse.ArgumentParser(prog="edge")
events.register(parser.add_subparsers(dest="command"), [parent])
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def edge_events(*argv: str) -> int:
    """Parse and run like the `edge` dispatcher does: a parent parser supplies --config."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config")
    parser = argparse.ArgumentParser(prog="edge")
    cmd.register(parser.add_subparsers(dest="command"), [parent])
    args = parser.parse_args(["events", *argv])
    return int(args.func(args))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'[site]\nid = "t-site"\n\n[paths]\ndata_dir = "{tmp_path / "data"}"\n')
    return cfg


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "journal.db"


@pytest.fixture
def journal(db_path: Path) -> Iterator[Journal]:
    with Journal(db_path) as j:
        yield j


def ago(**delta: float) -> str:
    return iso_utc(dt.datetime.now(dt.timezone.utc) - dt.timedelta(**delta))


def seed(journal: Journal) -> list[Event]:
    return journal.append_many(
        [
            Event(
                Kind.BURGLARY, zone_id="hall", zone_name="Hall", partition="main", ts=ago(hours=3)
            ),
            Event(Kind.FIRE, zone_id="kitchen", ts=ago(hours=2)),
            Event(Kind.BURGLARY_RESTORE, zone_id="hall", ts=ago(minutes=5)),
            Event(Kind.MAINS_LOSS, details={"volts": 0.0}, ts=ago(minutes=1)),
        ]
    )


def test_list_prints_one_readable_line_per_event(
    site: Path, journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(journal)
    assert edge_events("--config", str(site)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("#1 ") and "BURGLARY ALARM zone hall (Hall)" in lines[0]
    assert "BA/130" in lines[0] and "[partition main]" in lines[0]
    assert "FIRE ALARM zone kitchen" in lines[1]
    assert "mains power lost" in lines[3] and lines[3].endswith("— volts 0.0")


def test_limit_zone_and_json(
    site: Path, journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    committed = seed(journal)
    assert edge_events("--config", str(site), "--limit", "2") == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["#3", "#4"]
    assert edge_events("list", "--config", str(site), "--zone", "hall", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [committed[0].id, committed[2].id]
    assert rows[0]["hash"] == committed[0].hash and rows[1]["prev"] == committed[1].hash
    assert rows[0]["sia"] == "BA" and rows[0]["cid"] == 130


@pytest.mark.parametrize(
    ("since", "seqs"), [("10m", [3, 4]), ("150m", [2, 3, 4]), ("1d", [1, 2, 3, 4])]
)
def test_since_accepts_relative_durations(
    site: Path, journal: Journal, capsys: pytest.CaptureFixture[str], since: str, seqs: list[int]
) -> None:
    seed(journal)
    assert edge_events("--config", str(site), "--since", since, "--json") == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == seqs


def test_since_accepts_iso_times(
    site: Path, journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(journal)
    when = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    assert edge_events("--config", str(site), "--since", when, "--json") == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [3, 4]


def test_parse_since_forms() -> None:
    now = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.timezone.utc)
    assert cmd.parse_since("2h", now) == "2026-11-22T08:00:00.000Z"
    assert cmd.parse_since("3D", now) == "2026-11-19T10:00:00.000Z"
    assert cmd.parse_since("2026-11-22T10:00") == "2026-11-22T10:00:00.000Z"
    assert cmd.parse_since("2026-11-22T10:00+01:00") == "2026-11-22T09:00:00.000Z"
    assert cmd.parse_since("2026-11-22T10:00:00.250Z") == "2026-11-22T10:00:00.250Z"


def test_unparsable_since_is_a_usage_error(
    site: Path, journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edge_events("--config", str(site), "--since", "yesterday-ish") == EX_USAGE
    err = capsys.readouterr().err
    assert "--since" in err and "yesterday-ish" in err and "10m" in err


def test_missing_journal_list_is_fine_verify_is_not(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edge_events("--config", str(site)) == 0
    assert "no journal yet at" in capsys.readouterr().err
    assert edge_events("verify", "--config", str(site)) == 1
    assert "the alarm service creates it on first start" in capsys.readouterr().err


def test_bad_config_exits_with_ex_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edge_events("--config", str(tmp_path / "absent.toml")) == EX_CONFIG
    assert "file not found" in capsys.readouterr().err


def test_verify_ok_then_tampered(
    site: Path, journal: Journal, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(journal)
    assert edge_events("verify", "--config", str(site)) == 0
    assert capsys.readouterr().out.strip() == "OK: 4 events, chain intact"
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("DROP TRIGGER events_no_update")
    db.execute("UPDATE events SET zone = 'garage' WHERE seq = 2")
    db.close()
    assert edge_events("verify", "--config", str(site)) == 1
    out = capsys.readouterr().out
    assert out.startswith("TAMPERED:") and "seq 2" in out and "edited" in out


# -- follow (a real subprocess, as an operator would run it) ---------------------------------
def _lines(stream: IO[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """Lines of a pipe as they come, so a test can wait for one with a timeout."""
    found: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            found.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return found, thread


def _ctrl_c_delivered() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_follow_waits_for_the_journal_then_prints_new_events(site: Path, db_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", FOLLOW, "events", "--config", str(site), "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A terminal delivers Ctrl-C; a runner started in the background (CI) may have
        # SIGINT ignored, and Python then never raises KeyboardInterrupt. Restore it.
        preexec_fn=_ctrl_c_delivered,
    )
    assert proc.stdout is not None and proc.stderr is not None
    (out, _), (err, err_done) = _lines(proc.stdout), _lines(proc.stderr)
    try:
        assert "no journal yet at" in err.get(timeout=10)
        with Journal(db_path) as writer:
            first = writer.append(Event(Kind.TAMPER, zone_id="siren-box"))
            assert json.loads(out.get(timeout=10))["id"] == first.id
            second = writer.append(Event(Kind.TAMPER_RESTORE, zone_id="siren-box"))
            assert json.loads(out.get(timeout=10))["seq"] == second.seq
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err_done.join(timeout=10)
    leftover = []
    while not err.empty():
        leftover.append(err.get())
    assert not any("Traceback" in line for line in leftover)


# -- words, zones and the site's time zone -----------------------------------------------------
@pytest.fixture
def paris_site(tmp_path: Path) -> Path:
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        f'[site]\nid = "t-site"\ntimezone = "Europe/Paris"\n\n[paths]\n'
        f'data_dir = "{tmp_path / "data"}"\n\n[[zones]]\nid = "door"\ntype = "instant"\n'
        'input = { kind = "gpio", pin = 17, contact = "nc" }\n'
    )
    return cfg


def test_details_read_as_words_with_control_characters_escaped(
    paris_site: Path, journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    journal.append_many(
        [
            Event(
                Kind.OUTPUT_ON,
                details={"output": "siren", "reason": "alarm", "user": None, "readback": True,
                         "readback_ok": True, "seconds": 30},
            ),
            Event(
                Kind.ARM_REFUSED,
                partition="main",
                details={"mode": "full", "zones": ["door", "hall"], "source": "command",
                         "user": "alice", "reason": "cannot arm main"},
            ),
            Event(Kind.LIVE_REFUSED, details={"operator": "lan:\x1b[31mevil", "count": 3}),
            Event(Kind.OUTPUT_OFF, details={"output": "gate", "readback": True,
                                            "readback_ok": False}),
        ]
    )  # fmt: skip
    assert edge_events("--config", str(paris_site)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("output on — output siren, reason alarm, pin reads on, seconds 30")
    assert out[1].endswith(
        "arming refused [partition main] — reason cannot arm main, mode full, zones door, hall, "
        "by alice, via command"
    )
    assert "by lan:\\x1b[31mevil" in out[2] and "\x1b" not in out[2]
    assert "PIN DOES NOT FOLLOW THE COMMAND" in out[3]
    for line in out:
        assert "None" not in line and "['" not in line and "=" not in line


def test_times_are_in_the_site_zone_and_since_is_read_there(
    paris_site: Path, journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    winter = "2026-01-15T10:00:00.000Z"
    summer = "2026-07-15T10:00:00.000Z"
    journal.append_many([Event(Kind.TAMPER, ts=winter), Event(Kind.TAMPER, ts=summer)])
    assert edge_events("--config", str(paris_site)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("#1 2026-01-15 11:00:00 CET ")
    assert out[1].startswith("#2 2026-07-15 12:00:00 CEST ")
    # 11:30 in Paris in July is 09:30 UTC: only the summer event is after it.
    assert edge_events("--config", str(paris_site), "--since", "2026-07-15T11:30") == 0
    assert [x.split()[0] for x in capsys.readouterr().out.splitlines()] == ["#2"]
    assert edge_events("--config", str(paris_site), "--since", "2026-07-15T12:30") == 0
    assert capsys.readouterr().out == ""
    assert cmd.parse_since("2026-11-22T10:00+01:00") == "2026-11-22T09:00:00.000Z"


def test_zone_filter_knows_the_site_and_the_journal(
    paris_site: Path, journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    journal.append(Event(Kind.BURGLARY, zone_id="old-zone"))  # removed from the site since
    assert edge_events("--config", str(paris_site), "--zone", "old-zone") == 0
    assert "zone old-zone" in capsys.readouterr().out
    assert edge_events("--config", str(paris_site), "--zone", "door") == 0
    assert edge_events("--config", str(paris_site), "--zone", "nope") == EX_USAGE
    err = capsys.readouterr().err
    assert "no zone 'nope' in this site or its journal; zones: door" in err


def test_unknown_zone_without_a_journal_is_still_an_error(
    paris_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edge_events("--config", str(paris_site), "--zone", "nope") == EX_USAGE
    assert "zones: door" in capsys.readouterr().err
