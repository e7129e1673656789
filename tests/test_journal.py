"""The event journal: durable, append-only, hash-chained, prunable without breaking the chain."""

from __future__ import annotations

import datetime as dt
import itertools
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.small_disk import SmallDisk, small_disk

from edge.disk import Reserve
from edge.errors import JournalError
from edge.events import Event, Kind
from edge.journal import GENESIS, SCHEMA_VERSION, Journal, JournalNotReady, iso_utc
from edge.sqlite_wal import WAL_LIMIT_BYTES

WRITER = Path(__file__).parent / "support" / "journal_writer.py"
NOW = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.timezone.utc)


def ev(
    kind: Kind = Kind.BURGLARY, zone: str | None = "z1", age_days: float = 0, **kw: object
) -> Event:
    ts = iso_utc(NOW - dt.timedelta(days=age_days))
    return Event(kind, zone_id=zone, ts=ts, **kw)  # type: ignore[arg-type]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "journal.db"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    j = Journal(path)
    yield j
    j.close()


def filled(journal: Journal, n: int, **kw: object) -> list[Event]:
    return [journal.append(ev(details={"n": i}, **kw)) for i in range(n)]  # type: ignore[arg-type]


def attacker(path: Path) -> sqlite3.Connection:
    """A raw connection of someone who removes the append-only triggers first."""
    db = sqlite3.connect(path, isolation_level=None)
    for name in ("events_no_update", "events_no_delete"):
        db.execute(f"DROP TRIGGER {name}")
    return db


# -- chain ----------------------------------------------------------------------------------
def test_chain_links_every_row_and_verifies(journal: Journal) -> None:
    single = filled(journal, 120)
    batch = journal.append_many([ev(Kind.FIRE, zone=f"f{i}") for i in range(30)])
    rows = single + batch
    assert [e.seq for e in rows] == list(range(1, 151))
    assert rows[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(rows))
    assert len({e.hash for e in rows}) == 150
    report = journal.verify()
    assert (report.ok, report.checked, report.first_bad_seq) == (True, 150, None)


def test_append_returns_committed_copy_and_leaves_input_alone(journal: Journal) -> None:
    original = ev(details={"volts": 1.25})
    committed = journal.append(original)
    assert original.seq == 0 and original.hash == ""
    assert committed.seq == 1 and len(committed.hash) == 64
    assert journal.get(original.id) == committed
    assert journal.last_seq() == 1


def test_details_come_back_as_stored_json(journal: Journal) -> None:
    committed = journal.append(ev(details={"pair": (1, 2), 3: "x"}))
    assert committed.details == {"pair": [1, 2], "3": "x"}
    assert journal.get(committed.id) == committed
    assert journal.verify().ok


@pytest.mark.parametrize(
    ("column", "value"),
    [("details", '{"n":999}'), ("kind", "burglary_restore"), ("ts", "2020-01-01T00:00:00.000Z"),
     ("confirmed", 1), ("zone", "z9")],
)  # fmt: skip
def test_edited_row_is_named(journal: Journal, path: Path, column: str, value: object) -> None:
    filled(journal, 20)
    attacker(path).execute(f"UPDATE events SET {column} = ? WHERE seq = 7", (value,))
    report = journal.verify()
    assert not report.ok
    assert report.first_bad_seq == 7
    assert report.checked == 6
    assert "edited" in report.reason


def test_overwritten_hash_is_detected(journal: Journal, path: Path) -> None:
    filled(journal, 10)
    attacker(path).execute("UPDATE events SET hash = ? WHERE seq = 4", ("ab" * 32,))
    report = journal.verify()
    assert (report.ok, report.first_bad_seq) == (False, 4)


def test_deleted_middle_row_is_detected(journal: Journal, path: Path) -> None:
    filled(journal, 20)
    attacker(path).execute("DELETE FROM events WHERE seq = 10")
    report = journal.verify()
    assert (report.ok, report.first_bad_seq, report.checked) == (False, 11, 9)
    assert "seq 10 to 10 are missing" in report.reason


def test_deleted_head_without_prune_anchor_is_detected(journal: Journal, path: Path) -> None:
    filled(journal, 10)
    attacker(path).execute("DELETE FROM events WHERE seq <= 3")
    report = journal.verify()
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert "deleted" in report.reason


def test_reordered_rows_are_detected(journal: Journal, path: Path) -> None:
    filled(journal, 10)
    db = attacker(path)
    db.execute("UPDATE events SET seq = 100 WHERE seq = 5")
    db.execute("UPDATE events SET seq = 5 WHERE seq = 6")
    db.execute("UPDATE events SET seq = 6 WHERE seq = 100")
    report = journal.verify()
    assert (report.ok, report.first_bad_seq) == (False, 5)


def test_a_row_rehashed_by_the_attacker_is_caught_at_the_next_link(
    journal: Journal, path: Path
) -> None:
    from edge.journal import CONTENT, chain_hash

    filled(journal, 10)
    db = attacker(path)
    db.row_factory = sqlite3.Row
    db.execute("UPDATE events SET details = '{\"n\":42}' WHERE seq = 4")
    row = db.execute("SELECT * FROM events WHERE seq = 4").fetchone()
    content = {name: row[name] for name in CONTENT} | {"details": {"n": 42}}
    db.execute("UPDATE events SET hash = ? WHERE seq = 4", (chain_hash(row["prev"], content),))
    report = journal.verify()
    assert (report.ok, report.first_bad_seq) == (False, 5)
    assert "seq 4 was rewritten" in report.reason


def test_sql_update_and_delete_are_refused_while_triggers_stand(
    journal: Journal, path: Path
) -> None:
    filled(journal, 5)
    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE events SET kind = 'fire' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM events WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="prune"):
        db.execute("INSERT INTO anchor VALUES (1, 3, ?)", ("0" * 64,))
    assert db.execute("SELECT count(*), max(kind) FROM events").fetchone() == (5, "burglary")
    db.close()
    assert journal.verify().ok


# -- idempotence, reading --------------------------------------------------------------------
def test_append_of_a_known_id_returns_the_committed_row(journal: Journal) -> None:
    first = journal.append(ev())
    filled(journal, 3)
    again = journal.append(ev(zone="other", id=first.id))
    assert again == first
    batch = journal.append_many([ev(id=first.id), ev(zone="new"), ev(zone="new", id="dup")])
    dup = journal.append_many([ev(id="dup")])
    assert [e.seq for e in batch] == [1, 5, 6]
    assert dup[0].seq == 6 and dup[0].zone_id == "new"
    assert journal.last_seq() == 6
    assert journal.verify().checked == 6


def test_a_second_writer_by_mistake_does_not_fork_the_chain(journal: Journal, path: Path) -> None:
    filled(journal, 3)
    with Journal(path) as intruder:
        intruder.append(ev(zone="intruder"))
    after = journal.append(ev(zone="service"))
    assert after.seq == 5
    assert journal.get(after.id) == after
    assert journal.verify().ok


def test_query_returns_newest_matching_in_ascending_order(journal: Journal) -> None:
    for i in range(10):
        journal.append(ev(zone="a" if i % 2 else "b", age_days=10 - i, details={"i": i}))
    assert [e.details["i"] for e in journal.query(limit=3)] == [7, 8, 9]
    assert [e.details["i"] for e in journal.query(zone="a", limit=2)] == [7, 9]
    since = iso_utc(NOW - dt.timedelta(days=3))
    assert [e.details["i"] for e in journal.query(since_ts=since)] == [7, 8, 9]
    naive_local_form = (NOW - dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    assert len(journal.query(since_ts=naive_local_form, zone="b")) == 1
    assert [e.seq for e in journal.since(7)] == [8, 9, 10]
    assert [e.seq for e in journal.since(0, limit=2)] == [1, 2]
    assert journal.get("nope") is None


def test_reader_sees_writer_commits_and_cannot_write(journal: Journal, path: Path) -> None:
    filled(journal, 3)
    with Journal(path, readonly=True) as reader:
        assert reader.last_seq() == 3
        journal.append(ev(zone="late"))
        assert reader.last_seq() == 4
        assert reader.since(3)[0].zone_id == "late"
        assert reader.verify().ok
        with pytest.raises(JournalError, match="read-only"):
            reader.append(ev())
        with pytest.raises(JournalError, match="read-only"):
            reader.prune()


def test_reader_of_a_missing_journal_does_not_create_it(tmp_path: Path) -> None:
    missing = tmp_path / "none" / "journal.db"
    with pytest.raises(JournalNotReady, match="no journal yet"):
        Journal(missing, readonly=True)
    assert not missing.parent.exists()


def test_file_settings_schema_and_boot_id(journal: Journal, path: Path) -> None:
    journal.append(ev())
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    boot_id = db.execute("SELECT boot_id FROM events").fetchone()[0]
    db.close()
    proc_boot = Path("/proc/sys/kernel/random/boot_id")
    if proc_boot.exists():
        assert boot_id == proc_boot.read_text().strip()
    assert path.parent.stat().st_mode & 0o777 == 0o750


def test_newer_schema_is_refused_with_upgrade_hint(journal: Journal, path: Path) -> None:
    journal.close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="upgrade edge"):
        Journal(path)


def test_damaged_file_error_names_the_file_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "journal.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError) as info:
        Journal(bad)
    assert str(bad) in str(info.value)
    assert "move it aside" in str(info.value)


# -- pruning -------------------------------------------------------------------------------
def test_prune_removes_old_rows_beyond_keep_events_and_anchors_the_chain(path: Path) -> None:
    with Journal(path, keep_events=5, keep_days=30, max_events=1000) as j:
        old = filled(j, 20, age_days=400)
        assert j.prune(NOW) == 15
        assert [e.seq for e in j.since(0)] == [16, 17, 18, 19, 20]
        report = j.verify()
        assert (report.ok, report.checked) == (True, 5)
        assert "anchor at seq 15" in report.reason
        assert j.append(ev()).prev == old[-1].hash
        assert j.prune(NOW) == 1  # seq 16 is now old and no longer among the newest 5
        assert j.prune(NOW) == 0
    with Journal(path) as reopened:  # the anchor is on disk
        assert reopened.last_seq() == 21
        assert reopened.verify().checked == 5
        assert reopened.append(ev()).seq == 22
        assert reopened.verify().ok


def test_prune_keeps_rows_younger_than_keep_days(path: Path) -> None:
    with Journal(path, keep_events=2, keep_days=30, max_events=1000) as j:
        for age in (100, 90, 80, 10, 95, 5, 1):  # a young row protects everything after it
            j.append(ev(age_days=age))
        assert j.prune(NOW) == 3
        assert [e.seq for e in j.since(0)] == [4, 5, 6, 7]
        assert j.verify().ok


def test_prune_enforces_max_events_even_for_young_rows(path: Path) -> None:
    with Journal(path, keep_events=5, keep_days=30, max_events=8) as j:
        filled(j, 20, age_days=1)
        assert j.prune(NOW) == 12
        assert [e.seq for e in j.since(0)] == list(range(13, 21))
        assert j.verify().ok


def test_prune_keeps_what_the_central_station_is_still_owed(path: Path) -> None:
    with Journal(path, keep_events=5, keep_days=30, max_events=30) as j:
        filled(j, 20, age_days=400)
        assert j.prune(NOW, floor_seq=8) == 7  # seq 8 is not yet acknowledged: it stays
        assert j.since(0)[0].seq == 8
        filled(j, 20, age_days=400)
        assert j.prune(NOW, floor_seq=8) == 3  # the disk bound (max_events) still wins
        assert len(j.since(0, limit=100)) == 30 and j.verify().ok


def test_head_deleted_after_prune_is_still_detected(path: Path) -> None:
    with Journal(path, keep_events=5, keep_days=30, max_events=1000) as j:
        filled(j, 12, age_days=400)
        j.prune(NOW)
        attacker(path).execute("DELETE FROM events WHERE seq = 8")
        report = j.verify()
        assert (report.ok, report.first_bad_seq) == (False, 9)


# -- durability ----------------------------------------------------------------------------
def test_every_acknowledged_seq_survives_sigkill(path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen = [int(proc.stdout.readline()) for _ in range(40)]
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()  # lines printed before the kill are committed too
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    seen += [int(line) for line in rest.split()]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    present = {row[0] for row in db.execute("SELECT seq FROM events")}
    db.close()
    assert set(seen) <= present
    with Journal(path) as j:
        assert j.verify().ok
        assert j.last_seq() >= max(seen)
        assert j.append(ev()).seq == j.last_seq()


# -- a full data disk (a real small filesystem, filled with a plain file) -------------------
@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk", 4 * 1024 * 1024) as d:
        yield d


def test_a_full_disk_uses_the_reserve_then_holds_events_and_writes_them_back(
    disk: SmallDisk,
) -> None:
    path = disk.path / "journal.db"
    calls: list[int] = []
    with Journal(path, on_disk_full=lambda: calls.append(1)) as j:
        before = filled(j, 3)
        assert Reserve(disk.path).ensure()
        disk.fill()
        reserved = j.append(ev(Kind.PANIC))  # the reserve gives way: still durable
        assert reserved.seq == 4 and j.held() == 0 and not Reserve(disk.path).present()
        disk.fill()  # another writer takes what the reserve gave back
        held = j.append_many([ev(Kind.FIRE), ev(Kind.TAMPER)])
        assert [e.seq for e in held] == [5, 6] and j.held() == 2 and calls == [1]
        assert held[0].prev == reserved.hash and held[1].prev == held[0].hash
        assert [e.id for e in j.since(3)] == [reserved.id, held[0].id, held[1].id]
        assert j.get(held[1].id) == held[1] and j.by_seqs([6, 4])[0] == held[1]
        assert [e.seq for e in j.query(limit=2)] == [5, 6]
        assert j.append(held[0]) == held[0]  # a known id is not chained twice
        assert j.durable_seq() == 4 and j.last_seq() == 6
        with Journal(path, readonly=True) as reader:
            assert reader.last_seq() == 4  # not in the file yet
        assert j.prune(NOW) == 0 and not j.flush()
        disk.release()
        assert j.flush() and j.held() == 0 and j.durable_seq() == 6
        after = j.append(ev(Kind.BURGLARY))
        assert after.seq == 7 and after.prev == held[1].hash
    with Journal(path, readonly=True) as reader:
        assert reader.verify().ok
        assert [e.hash for e in reader.since(0)] == [
            e.hash for e in [*before, reserved, *held, after]
        ]


def test_a_restart_on_a_disk_without_room_for_the_index_opens_exclusive(disk: SmallDisk) -> None:
    path = disk.path / "journal.db"
    with Journal(path) as j:
        filled(j, 2)
    assert not Path(f"{path}-shm").exists()  # a clean close removes the index
    disk.fill()
    with Journal(path) as j:
        assert j.exclusive  # SQLite keeps the index in memory
        held = j.append(ev(Kind.PANIC))
        assert held.seq == 3 and j.held() == 1
        with pytest.raises(JournalError, match="full data disk"):
            Journal(path, readonly=True).since(0)
        disk.release()
        assert j.flush() and not j.exclusive  # open to readers again
        with Journal(path, readonly=True) as reader:
            assert reader.last_seq() == 3 and reader.verify().ok


def test_held_events_are_bounded_and_alarms_keep_the_last_room(disk: SmallDisk) -> None:
    with Journal(disk.path / "journal.db", held_max=10) as j:
        disk.fill()
        j.append_many([ev(Kind.OUTPUT_ON) for _ in range(9)])
        assert j.append(ev(Kind.OUTPUT_OFF)).seq == 0  # local-only: refused from 90 %
        assert j.append(ev(Kind.PANIC)).seq == 10
        assert j.append(ev(Kind.PANIC)).seq == 0  # full
        assert (j.held(), j.lost()) == (10, 2)
        disk.release()
        assert j.flush() and j.verify().ok and j.last_seq() == 10


def test_wal_stays_small_and_a_checkpoint_empties_it(path: Path) -> None:
    with Journal(path) as j:
        for i in range(60):
            j.append_many([ev(details={"n": i, "pad": "x" * 400}) for _ in range(20)])
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size <= WAL_LIMIT_BYTES + 64 * 1024, wal.stat().st_size
        assert j.checkpoint()
        assert wal.stat().st_size == 0
