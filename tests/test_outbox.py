"""The outbox: every transmit-kind journal event owed to each transport until acked."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.small_disk import SmallDisk, small_disk

from edge.events import Category, Event, Kind
from edge.journal import Journal
from edge.uplink.outbox import (
    REJECTED_KEEP,
    Outbox,
    OutboxError,
    backoff_delay,
    outbox_path,
    priority_of,
)

TS = "2026-11-22T10:00:00.000Z"
TS_EPOCH = 1795341600.0  # TS as epoch seconds
BOTH = ("mqtt", "dc09")


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return outbox_path(tmp_path)


@pytest.fixture
def box(path: Path) -> Iterator[Outbox]:
    o = Outbox(path, BOTH, rng=random.Random(1))
    yield o
    o.close()


def add(journal: Journal, *kinds: Kind) -> list[Event]:
    return journal.append_many([Event(k, zone_id="z1", ts=TS) for k in kinds])


def seqs(box: Outbox, transport: str = "mqtt", now: float = 0.0, limit: int = 100) -> list[int]:
    return [item.seq for item in box.due(transport, now, limit)]


# -- priority and order ---------------------------------------------------------------------
def test_priority_ranks_alarms_then_faults_then_restores_then_system() -> None:
    assert priority_of(Kind.BURGLARY) == priority_of(Kind.TAMPER) == 0
    assert priority_of(Kind.MAINS_LOSS) == 1
    ranks = {priority_of(k) for k in (Kind.BURGLARY_RESTORE, Kind.ARMED, Kind.BYPASS)}
    assert ranks == {2}
    assert priority_of(Kind.SERVICE_STARTED) == 3
    assert all(priority_of(k) >= 0 for k in Kind)  # every kind has a rank


def test_due_orders_by_priority_then_seq(journal: Journal, box: Outbox) -> None:
    events = add(
        journal,
        Kind.SERVICE_STARTED,  # 1 system
        Kind.BURGLARY_RESTORE,  # 2 restore
        Kind.ARMED,  # 3 arming
        Kind.LOW_BATTERY,  # 4 fault
        Kind.EXIT_DELAY,  # 5 local: never transmitted
        Kind.BURGLARY,  # 6 alarm
        Kind.TAMPER,  # 7 tamper
        Kind.FIRE,  # 8 alarm
    )
    assert box.catch_up(journal) == 7
    assert seqs(box) == [6, 7, 8, 4, 2, 3, 1]
    assert seqs(box, "dc09") == [6, 7, 8, 4, 2, 3, 1]
    assert seqs(box, limit=2) == [6, 7]
    assert [e.seq for e in events if e.kind.spec.category == Category.LOCAL] == [5]


def test_catch_up_twice_enqueues_nothing_new(journal: Journal, box: Outbox) -> None:
    add(journal, Kind.BURGLARY, Kind.FIRE)
    assert box.catch_up(journal) == 2
    assert box.catch_up(journal) == 0
    add(journal, Kind.PANIC)
    assert box.catch_up(journal) == 1
    assert box.catch_up(journal) == 0
    assert seqs(box) == [1, 2, 3]
    assert box.depth("mqtt") == box.depth("dc09") == 3


def test_catch_up_reads_a_backlog_larger_than_one_batch(journal: Journal, box: Outbox) -> None:
    add(journal, *[Kind.BURGLARY, Kind.OUTPUT_ON] * 1100)  # 2200 rows, 1100 transmitted
    assert box.catch_up(journal) == 1100
    assert box.depth("mqtt") == 1100
    assert seqs(box, limit=3) == [1, 3, 5]


# -- crash safety ---------------------------------------------------------------------------
CRASHER = """
import os, sys
from pathlib import Path
from edge.events import Event, Kind
from edge.journal import Journal
from edge.uplink.outbox import Outbox
journal = Journal(Path(sys.argv[1]))
box = Outbox(Path(sys.argv[2]), ["mqtt", "dc09"])
journal.append_many([Event(Kind.BURGLARY) for _ in range(5)])
box.catch_up(journal)
box.ack("mqtt", [journal.since(0, 1)[0].id])
journal.append_many([Event(Kind.FIRE) for _ in range(4)])  # never reaches the outbox
os._exit(0)  # no close, no commit of anything pending: as a crash would leave it
"""


def test_crash_between_journal_and_outbox_loses_nothing(tmp_path: Path, path: Path) -> None:
    jpath = tmp_path / "journal.db"
    cmd = [sys.executable, "-c", CRASHER, str(jpath), str(path)]
    subprocess.run(cmd, check=True, timeout=60, cwd=Path(__file__).parents[1])
    with Journal(jpath) as journal, Outbox(path, BOTH) as box:
        assert box.depth("mqtt") == 4 and box.depth("dc09") == 5  # what was committed
        assert box.catch_up(journal) == 4
        assert seqs(box) == [2, 3, 4, 5, 6, 7, 8, 9]
        assert seqs(box, "dc09") == list(range(1, 10))
        assert box.catch_up(journal) == 0


def test_discarded_outbox_reopened_holds_everything_once(journal: Journal, path: Path) -> None:
    first = Outbox(path, BOTH)
    add(journal, Kind.BURGLARY, Kind.TAMPER)
    first.catch_up(journal)
    add(journal, Kind.FIRE, Kind.MAINS_LOSS)  # appended, the outbox not told
    del first  # dropped without close()
    second = Outbox(path, BOTH)
    try:
        assert second.catch_up(journal) == 2
        assert second.catch_up(journal) == 0
        assert seqs(second) == [1, 2, 3, 4]
        assert second.depth("mqtt") == 4
    finally:
        second.close()


def test_reopening_makes_in_flight_items_due_at_once(journal: Journal, path: Path) -> None:
    with Outbox(path, BOTH) as box:
        add(journal, Kind.BURGLARY)
        box.catch_up(journal)
        box.mark_sent("mqtt", [1], now=1_000_000.0)  # a monotonic time of a previous boot
        assert seqs(box, now=1_000_001.0) == []
    with Outbox(path, BOTH) as box:
        assert seqs(box, now=0.0) == [1]
        assert box.due("mqtt", 0.0)[0].attempts == 1


def test_a_replaced_journal_rejects_the_old_items(tmp_path: Path, path: Path) -> None:
    with Journal(tmp_path / "old.db") as old, Outbox(path, BOTH) as box:
        add(old, Kind.BURGLARY, Kind.FIRE, Kind.PANIC)
        box.catch_up(old)
    with Journal(tmp_path / "new.db") as new, Outbox(path, BOTH) as box:
        add(new, Kind.TAMPER)
        assert box.catch_up(new) == 1
        assert [i.event_id for i in box.due("mqtt", 0.0)] == [new.since(0, 1)[0].id]
        assert box.stats()["mqtt"]["rejected"] == 3


# -- acks, retries, rejects -----------------------------------------------------------------
def test_ack_by_id_is_per_transport(journal: Journal, box: Outbox) -> None:
    events = add(journal, Kind.BURGLARY, Kind.FIRE, Kind.PANIC)
    box.catch_up(journal)
    assert box.ack("mqtt", [events[0].id, events[2].id, events[0].id, "unknown"]) == 2
    assert seqs(box) == [2]
    assert seqs(box, "dc09") == [1, 2, 3]
    assert box.ack("mqtt", [events[0].id]) == 0  # a duplicate ack is harmless
    assert box.ack("mqtt", []) == 0
    assert (box.depth("mqtt"), box.depth("dc09")) == (1, 3)


def test_mark_sent_backs_off_exponentially_up_to_the_cap(journal: Journal, path: Path) -> None:
    add(journal, Kind.BURGLARY)
    with Outbox(path, BOTH, backoff_s=(5.0, 60.0), rng=random.Random(7)) as box:
        box.catch_up(journal)
        now, delays = 100.0, []
        for _ in range(8):
            box.mark_sent("mqtt", [1], now)
            assert box.due("mqtt", now) == []  # in flight: not resent before its time
            item = box.due("mqtt", now + 10_000)[0]
            delays.append(item.next_try - now)
            now = item.next_try
        assert item.attempts == 8 and item.first_sent == 100.0
        nominal = [5, 10, 20, 40, 60, 60, 60, 60]
        for delay, base in zip(delays, nominal, strict=True):
            assert 0.8 * base <= delay <= min(60.0, 1.2 * base)
        assert delays[3] > delays[0] * 4  # grows
        assert max(delays) <= 60.0  # capped
        assert seqs(box, "dc09", now=100.0) == [1]  # the other transport is untouched


def test_backoff_jitter_spreads_retries() -> None:
    rng = random.Random(3)
    values = {round(backoff_delay(1, (5.0, 300.0), rng), 6) for _ in range(50)}
    assert len(values) > 40
    assert all(4.0 <= v <= 6.0 for v in values)
    assert backoff_delay(1000, (5.0, 300.0), rng) <= 300.0


def test_mark_sent_takes_a_batch_and_ignores_gone_items(journal: Journal, box: Outbox) -> None:
    events = add(journal, *[Kind.BURGLARY] * 5)
    box.catch_up(journal)
    box.ack("mqtt", [events[4].id])
    box.mark_sent("mqtt", [1, 2, 3, 5, 99], now=10.0)  # 5 acked, 99 never existed
    assert seqs(box, now=10.0) == [4]
    assert sorted(seqs(box, now=100.0)) == [1, 2, 3, 4]


def test_reject_removes_and_records(journal: Journal, path: Path, box: Outbox) -> None:
    add(journal, Kind.BURGLARY, Kind.FIRE)
    box.catch_up(journal)
    box.reject("dc09", 1, "DUH: receiver refused the account")
    box.reject("dc09", 1, "again")  # no longer pending: ignored
    assert seqs(box, "dc09") == [2]
    assert seqs(box) == [1, 2]
    assert box.stats(now_wall=TS_EPOCH)["dc09"] == {"depth": 1, "oldest_s": 0.0, "rejected": 1}
    row = sqlite3.connect(path).execute("SELECT transport, seq, reason FROM rejected").fetchall()
    assert row == [("dc09", 1, "DUH: receiver refused the account")]


def test_unknown_transport_is_a_clear_error(box: Outbox) -> None:
    with pytest.raises(ValueError, match=r"unknown transport 'smtp'.*mqtt, dc09"):
        box.due("smtp", 0.0)


# -- bounds and ages ------------------------------------------------------------------------
def test_overflow_drops_telemetry_before_alarms(journal: Journal, path: Path) -> None:
    with Outbox(path, BOTH, max_rows=5) as box:
        add(journal, Kind.BURGLARY, Kind.SERVICE_STARTED, Kind.ARMED, Kind.SERVICE_STARTED)
        box.catch_up(journal)
        assert box.overflow() == {}
        add(journal, Kind.FIRE, Kind.MAINS_LOSS, Kind.TAMPER)  # 7 owed, room for 5
        box.catch_up(journal)
        assert seqs(box) == [1, 5, 7, 6, 3]  # both system events went
        assert box.depth("mqtt") == 5
        assert box.overflow() == {"mqtt": 2, "dc09": 2}
        assert box.overflow() == {}
        add(journal, *[Kind.PANIC] * 4)  # only alarms and one fault left to drop
        box.catch_up(journal)
        assert seqs(box) == [7, 8, 9, 10, 11]  # the oldest alarms go after everything else
        assert box.stats()["mqtt"]["rejected"] == 6


def test_rejected_table_is_bounded(journal: Journal, box: Outbox) -> None:
    add(journal, *[Kind.BURGLARY] * 3)
    box.catch_up(journal)
    box._store.db.executemany(  # a full table, without sending 10,000 events through
        "INSERT INTO rejected VALUES ('dc09', ?, 'x', 0, 0, 1, 'old', 0)",
        [(i,) for i in range(REJECTED_KEEP)],
    )
    box.reject("dc09", 1, "new")
    assert box.stats()["dc09"]["rejected"] == REJECTED_KEEP


def test_oldest_unacked_age_follows_the_journal_ts(journal: Journal, box: Outbox) -> None:
    assert box.oldest_unacked_age_s("mqtt", TS_EPOCH) is None
    older = Event(Kind.SERVICE_STARTED, ts="2026-11-22T09:59:00.000Z")
    events = journal.append_many([older, Event(Kind.BURGLARY, ts=TS)])
    box.catch_up(journal)
    assert box.oldest_unacked_age_s("mqtt", TS_EPOCH + 30) == pytest.approx(90.0)
    box.ack("mqtt", [events[0].id])
    assert box.oldest_unacked_age_s("mqtt", TS_EPOCH + 30) == pytest.approx(30.0)
    assert box.stats(now_wall=TS_EPOCH + 30)["dc09"]["oldest_s"] == pytest.approx(90.0)


def test_transport_removed_from_config_is_dropped(journal: Journal, path: Path) -> None:
    with Outbox(path, BOTH) as box:
        add(journal, Kind.BURGLARY)
        box.catch_up(journal)
    with Outbox(path, ["mqtt"]) as box:
        assert box.stats(now_wall=TS_EPOCH) == {
            "mqtt": {"depth": 1, "oldest_s": 0.0, "rejected": 0}
        }


def test_bad_arguments_and_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct"):
        Outbox(tmp_path / "o.db", ["mqtt", "mqtt"])
    with pytest.raises(ValueError, match="backoff"):
        Outbox(tmp_path / "o.db", ["mqtt"], backoff_s=(10.0, 5.0))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match=r"junk\.db.*move the file aside"):
        Outbox(junk, ["mqtt"])


# -- a full data disk (a real small filesystem, filled with a plain file) -------------------
@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk", 4 * 1024 * 1024) as d:
        yield d


def test_a_full_disk_keeps_the_outbox_sending_from_memory_then_writes_it_back(
    disk: SmallDisk,
) -> None:
    opath = outbox_path(disk.path)
    with Journal(disk.path / "journal.db") as journal, Outbox(opath, BOTH) as box:
        first = add(journal, Kind.BURGLARY, Kind.FIRE)
        box.catch_up(journal)
        disk.fill()
        box.mark_sent("mqtt", [1, 2], now=10.0)  # a change of file rows, kept in memory
        assert box.ack("mqtt", [first[0].id]) == 1
        later = add(journal, Kind.PANIC, Kind.SERVICE_STARTED)  # held by the journal too
        assert journal.held() == 2 and box.catch_up(journal) == 2 and box.held() > 0
        assert seqs(box, now=10.0) == [3, 4]  # seq 2 waits for its retry time
        assert seqs(box, now=100.0) == [2, 3, 4]
        assert [i.seq for i in box.oldest("mqtt")] == [2, 3, 4]
        assert (box.depth("mqtt"), box.depth("dc09")) == (3, 4)
        box.reject("dc09", 3, "DUH")
        assert box.ack("dc09", [later[1].id]) == 1
        assert seqs(box, "dc09") == [1, 2] and box.stats()["dc09"]["rejected"] == 1
        assert box.next_try("mqtt") == 0.0 and box.oldest_pending_seq() == 1
        assert not box.flush(journal)  # the journal's file does not hold seq 3 and 4 yet
        disk.release()
        assert not box.flush(journal)  # still not: the journal writes first
        assert journal.flush() and box.flush(journal) and box.held() == 0
    with Journal(disk.path / "journal.db") as journal, Outbox(opath, BOTH) as box:
        assert box.catch_up(journal) == 0  # the mark moved with the rows
        assert seqs(box) == [2, 3, 4] and seqs(box, "dc09") == [1, 2]
        assert box.due("mqtt", 0.0)[0].attempts == 1  # the send made in memory was kept
        assert box.stats()["dc09"]["rejected"] == 1


def test_the_outbox_file_never_runs_ahead_of_the_journal_file(
    disk: SmallDisk, tmp_path: Path
) -> None:
    """The outbox's own disk has room, the journal's does not: the outbox keeps its mark in
    memory, so a crash now cannot leave it past the end of the journal's file."""
    opath = tmp_path / "elsewhere" / "outbox.db"
    with Journal(disk.path / "journal.db") as journal, Outbox(opath, BOTH) as box:
        add(journal, Kind.BURGLARY)
        box.catch_up(journal)
        disk.fill()
        add(journal, Kind.FIRE)
        assert box.catch_up(journal) == 1 and seqs(box) == [1, 2]
        assert not box.flush(journal)
    with Outbox(opath, BOTH) as box:  # as a crash would leave it
        assert seqs(box) == [1] and box.stats()["mqtt"]["rejected"] == 0


class NoJitter(random.Random):
    """Backoff without its random spread, so two outboxes plan the same retry times."""

    def uniform(self, a: float, b: float) -> float:
        return 1.0


def view(box: Outbox, now: float) -> list[object]:
    out: list[object] = [box.oldest_pending_seq()]
    for t in BOTH:
        out += [box.due(t, now, 7), box.oldest(t, 5), box.next_try(t), box.depth(t)]
        out.append(box.oldest_unacked_age_s(t, TS_EPOCH + 60))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_memory_and_file_answer_alike_through_a_full_disk(
    disk: SmallDisk, tmp_path: Path, seed: int
) -> None:
    """The same random sends, acks and rejects on an outbox with room and on one whose disk
    fills and empties: every answer matches, before, during and after, and after reopening."""
    rng = random.Random(seed)
    kinds = [Kind.BURGLARY, Kind.FIRE, Kind.SERVICE_STARTED, Kind.OUTPUT_ON, Kind.ARMED]
    jr, jf = Journal(tmp_path / "ref.db"), Journal(disk.path / "journal.db")
    ref = Outbox(tmp_path / "ref-outbox.db", BOTH, backoff_s=(1, 8), rng=NoJitter())
    box = Outbox(outbox_path(disk.path), BOTH, backoff_s=(1, 8), rng=NoJitter())
    now, full_at, free_at = 0.0, rng.randrange(3, 10), rng.randrange(12, 30)
    held = 0
    try:
        for step in range(40):
            if step == full_at:
                disk.fill()
            if step == free_at:
                disk.release()
            op, t = rng.random(), rng.choice(BOTH)
            pending = box.oldest(t, 50)
            if op < 0.35 or not pending:
                events = [Event(rng.choice(kinds), ts=TS) for _ in range(rng.randint(1, 4))]
                assert jr.append_many(events) == jf.append_many(events)
                assert ref.catch_up(jr) == box.catch_up(jf)
            elif op < 0.6:
                picked = [i.seq for i in rng.sample(pending, rng.randint(1, len(pending)))]
                ref.mark_sent(t, picked, now)
                box.mark_sent(t, picked, now)
            elif op < 0.85:
                ids = [i.event_id for i in rng.sample(pending, rng.randint(1, len(pending)))]
                assert ref.ack(t, ids) == box.ack(t, ids)
            else:
                item = rng.choice(pending)
                ref.reject(t, item.seq, "DUH")
                box.reject(t, item.seq, "DUH")
            now += rng.choice([0.0, 0.5, 2.0, 9.0])
            if rng.random() < 0.3:
                jf.flush()
                box.flush(jf)
            assert view(box, now) == view(ref, now), f"step {step}"
            assert box.stats(TS_EPOCH) == ref.stats(TS_EPOCH), f"step {step}"
            held = max(held, box.held())
        assert held > 0  # the memory overlay was really used
        disk.release()
        assert jf.flush() and box.flush(jf) and box.held() == 0
        assert view(box, now) == view(ref, now)
    finally:
        for thing in (ref, box, jr, jf):
            thing.close()
    with (
        Outbox(outbox_path(disk.path), BOTH) as box,
        Outbox(tmp_path / "ref-outbox.db", BOTH) as ref,
    ):
        assert view(box, 0.0) == view(ref, 0.0)
        assert box.stats(TS_EPOCH) == ref.stats(TS_EPOCH)
