"""Storage: the journal's integrity and size, the clip store against its quota, SD wear.

The journal's hash chain is verified incrementally so a run stays cheap: the check remembers
(in its memo) the last row it verified and its hash, and checks only the rows after it, at
most ``VERIFY_BUDGET_S`` per run (a long journal is caught up over a few runs). Remembering
the last verified row also catches what a chain alone cannot: rows removed from the end
(the journal now ends before a row verified earlier) and a verified row that changed. A new
journal file (another inode: the data directory was replaced) is verified from its start,
and so is the whole journal once a day (a row edited after it was verified).

The clip store may exceed its quota only between a clip's save and the retention run that
follows it (edge-video runs it after every saved clip): over the quota for longer than the
hold-off since the newest clip ended, clips are not being deleted.

SD wear: an SD card wears with the data written to it. The write counter of the data disk
(``/sys/dev/block/<major:minor>/stat``, sectors of 512 bytes) is compared with the last
run's (at least ``WEAR_MIN_INTERVAL_S`` apart; the average since boot before that). Above
``WEAR_WARN_BYTES_PER_DAY`` (20 GB a day, about 230 kB/s: a good industrial card of 32 GB
rated for ~3,000 writes of its size lasts ~13 years at that rate, a consumer card a year or
two) is a warning: something writes far more than the journal and the clips should.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge.diag.checks import journal_view
from edge.diag.checks.common import MB, duration, epoch
from edge.diag.model import Finding, fail, ok, unknown, warn
from edge.diag.registry import check
from edge.diag.sources import Sources

VERIFY_BUDGET_S = 0.15
VERIFY_BATCH = 500
FULL_EVERY_S = 86_400.0  # rows verified before are verified again once a day
JOURNAL_WARN = 0.95  # of journal.max_events: the oldest are about to go
CLIPS_OVER = 1.05  # used above quota x this: retention does not keep up
CLIPS_DIR, CLIP_INDEX = "clips", "index.db"  # edge.video.clip_index (a test keeps them equal)
WEAR_WARN_BYTES_PER_DAY = 20 * 10**9
WEAR_MIN_INTERVAL_S = 600.0
SECTOR = 512


# -- journal --------------------------------------------------------------------------------------
@check("journal.integrity", holdoff_s=0, about="the journal's hash chain (incremental)")
def integrity(src: Sources) -> list[Finding]:
    name = "journal.integrity"
    path = journal_view.journal_file(src)
    try:
        db = journal_view.connect(path, rows=True)
    except journal_view.JournalUnreadable as exc:
        return [unknown(name, str(exc))]
    try:
        return [_verify(src, db, path)]
    except sqlite3.Error as exc:
        return [unknown(name, f"cannot read {path}: {exc}")]
    finally:
        db.close()


def _verify(src: Sources, db: sqlite3.Connection, path: Path) -> Finding:
    """Verify the rows after the last verified one, within the budget; see the module doc.

    The memo (per journal file, by inode): ``seq`` and ``hash`` of the last verified row,
    ``high`` the highest seq ever seen on disk, ``full_at`` when the current pass from the
    anchor began, and ``broken`` once tampering was found (it stays: a chain does not heal).
    """
    from edge.journal_chain import GENESIS, check_row
    from edge.journal_schema import SELECT_EVENTS

    name = "journal.integrity"
    inode = os.stat(path).st_ino
    memo = src.memo(name)
    if memo.get("inode") != inode or not isinstance(memo.get("seq"), int):
        memo = {"inode": inode, "seq": -1, "hash": "", "high": 0, "full_at": 0.0}
    if isinstance(memo.get("broken"), dict):
        return _broken(path, memo["broken"])
    row = db.execute("SELECT seq, hash FROM anchor").fetchone()
    anchor = (row[0], row[1]) if row else (0, GENESIS)
    last = db.execute("SELECT MAX(seq) FROM events").fetchone()[0] or anchor[0]
    problem = _lost_rows(db, memo, anchor, last)
    seq, prev = anchor
    if problem is None and memo["seq"] > seq and src.now - memo["full_at"] < FULL_EVERY_S:
        seq, prev = memo["seq"], memo["hash"]
    elif problem is None:  # a first pass, a pruned past, or the daily pass over verified rows
        memo["full_at"] = src.now
    checked, started = 0, time.monotonic()
    while problem is None and seq < last and time.monotonic() - started < VERIFY_BUDGET_S:
        rows = db.execute(
            f"{SELECT_EVENTS} WHERE seq > ? ORDER BY seq LIMIT ?", (seq, VERIFY_BATCH)
        ).fetchall()
        if not rows:
            break
        for r in rows:
            why = check_row(r, seq, prev)
            if why:
                problem = (r["seq"], f"seq {r['seq']}: {why}")
                break
            seq, prev = r["seq"], r["hash"]
            checked += 1
    memo.update(seq=seq, hash=prev, high=max(int(memo["high"]), last))
    if problem is not None:
        memo["broken"] = {"seq": problem[0], "reason": problem[1]}
    saved = src.remember(name, memo)
    if problem is not None:
        return _broken(path, memo["broken"])
    ev: dict[str, Any] = {"verified_to": seq, "last_seq": last, "checked_now": checked}
    if not saved:
        ev["memo"] = "not saved: the next run starts again from the beginning"
    if seq < last:
        words = f"hash chain intact up to seq {seq} of {last} (the rest at the next runs)"
    else:
        words = f"hash chain intact up to seq {last}"
    return ok(name, words, evidence=ev)


def _lost_rows(
    db: sqlite3.Connection, memo: dict[str, Any], anchor: tuple[int, str], last: int
) -> tuple[int, str] | None:
    """What a chain alone cannot see: rows gone from the end, a verified row rewritten."""
    high = int(memo.get("high") or 0)
    if last < high:
        return high, (
            f"the journal ends at seq {last} but seq {high} was on disk before: events were "
            "removed from its end"
        )
    seq = memo["seq"]
    if seq < anchor[0] or seq < 0:
        return None  # pruned past it (or never verified): the chain from the anchor decides
    held = db.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
    known = held[0] if held else (anchor[1] if seq == anchor[0] else None)
    if known != memo["hash"]:
        return seq, f"seq {seq} is not the row verified before: it was rewritten"
    return None


def _broken(path: Path, broken: dict[str, Any]) -> Finding:
    return fail(
        "journal.integrity",
        f"the journal was tampered with or damaged: {broken.get('reason')}",
        "do not repair or delete it: call a technician with `edge events verify` and a copy "
        f"of {path}; the central station's copy of the events is the reference",
        evidence={"first_bad_seq": broken.get("seq"), "path": str(path)},
    )


@check("journal.size", holdoff_s=0, about="journal rows against journal.max_events")
def journal_size(src: Sources) -> list[Finding]:
    name = "journal.size"
    path = journal_view.journal_file(src)
    try:
        db = journal_view.connect(path)
        try:
            first, last = db.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
        finally:
            db.close()
    except journal_view.JournalUnreadable as exc:
        return [unknown(name, str(exc))]
    except sqlite3.Error as exc:
        return [unknown(name, f"cannot read {path}: {exc}")]
    rows = 0 if first is None else last - first + 1  # seqs are contiguous (the chain)
    bound = src.cfg.journal.max_events
    size = sum(_size(Path(f"{path}{suffix}")) for suffix in ("", "-wal"))
    ev = {"rows": rows, "max_events": bound, "mb": round(size / MB, 1)}
    words = (
        f"{rows} events in the journal ({rows / bound:.0%} of journal.max_events, "
        f"{size / MB:.0f} MB)"
    )
    if rows > bound:
        return [
            warn(
                name,
                words,
                "the journal is not pruned down to its bound: events still owed to the central "
                "station hold it (see outbox.backlog); it is pruned once they are delivered",
                evidence=ev,
            )
        ]
    if rows >= JOURNAL_WARN * bound:
        return [
            warn(
                name,
                words,
                "the oldest events are about to be dropped: export them (`edge events --json "
                "--limit 1000000 > events.jsonl`) if they must be kept, or raise "
                "journal.max_events",
                evidence=ev,
            )
        ]
    return [ok(name, words, evidence=ev)]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- clips ----------------------------------------------------------------------------------------
@check("clips.size", holdoff_s=60, about="clip store against video.clips.quota_mb")
def clips_size(src: Sources) -> list[Finding]:
    if not src.cfg.video.cameras:
        return []
    name = "clips.size"
    path = Path(src.cfg.paths.data_dir) / CLIPS_DIR / CLIP_INDEX
    quota = src.cfg.video.clips.quota_mb * MB
    if not path.exists():
        return [ok(name, "no clip saved yet", evidence={"quota_mb": quota // MB})]
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.2)
        try:
            count, used, undelivered, newest = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes + snapshot_bytes), 0), "
                "COALESCE(SUM(delivered = 0), 0), MAX(end_ts) FROM clips"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return [unknown(name, f"cannot read the clip index {path}: {exc}")]
    ev = {
        "clips": count,
        "used_mb": round(used / MB, 1),
        "quota_mb": quota // MB,
        "not_delivered": undelivered,
    }
    words = (
        f"{count} clip(s), {used / MB:.0f} MB of the {quota // MB} MB quota ({used / quota:.0%})"
    )
    last = epoch(newest)
    if last is not None:  # retention runs after every saved clip: over since then at least
        ev["age_s"] = round(max(0.0, src.now - last), 1)
    if used > CLIPS_OVER * quota:
        return [
            warn(
                name,
                words,
                f"old clips are not being deleted: check that edge-video runs and can write "
                f"{path.parent} (`journalctl -u edge-video | grep clip`)",
                evidence=ev,
            )
        ]
    return [ok(name, words, evidence=ev)]


# -- SD wear --------------------------------------------------------------------------------------
@check("disk.wear", holdoff_s=0, about="write rate of the data disk (SD card wear)")
def wear(src: Sources) -> list[Finding]:
    name = "disk.wear"
    if _in_container():
        return [unknown(name, "in a container: the disk's writes are the host's, not the box's")]
    data = Path(src.cfg.paths.data_dir)
    try:
        dev = os.stat(data if data.exists() else data.parent).st_dev
    except OSError as exc:
        return [unknown(name, f"cannot examine {data}: {exc.strerror}")]
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    try:
        written = int(stat.read_text().split()[6]) * SECTOR
    except (OSError, ValueError, IndexError):
        return [unknown(name, f"{data} is not on a block device whose writes can be counted here")]
    memo = src.memo(name)
    now = time.time()
    boot = _boot_time()
    rate: float | None = None
    since = "since boot"
    same_boot = memo.get("boot") is not None and abs(float(memo["boot"]) - boot) < 5
    if (
        same_boot
        and memo.get("dev") == dev
        and now - float(memo.get("at", now)) >= WEAR_MIN_INTERVAL_S
    ):
        span = now - float(memo["at"])
        rate = max(0, written - int(memo["bytes"])) / span
        since = f"over the last {duration(span)}"
    if rate is None and now > boot:
        rate = written / (now - boot)
    if (
        not same_boot
        or memo.get("dev") != dev
        or now - float(memo.get("at", 0)) >= WEAR_MIN_INTERVAL_S
    ):
        src.remember(name, {"dev": dev, "bytes": written, "at": now, "boot": boot})
    per_day = (rate or 0.0) * 86_400
    ev = {
        "gb_per_day": round(per_day / 1e9, 2),
        "written_gb": round(written / 1e9, 2),
        "device": f"{os.major(dev)}:{os.minor(dev)}",
    }
    words = f"the data disk takes {per_day / 1e9:.1f} GB a day {since}"
    if per_day > WEAR_WARN_BYTES_PER_DAY:
        return [
            warn(
                name,
                words,
                "something writes far more than usual and wears the SD card: `iotop -ao` shows "
                "which process; call a technician if it is an edge service",
                evidence=ev,
            )
        ]
    return [ok(name, words, evidence=ev)]


def _boot_time() -> float:
    try:
        up = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return time.time() - up


def _in_container() -> bool:
    """Docker and podman leave a mark; systemd-nspawn and LXC set $container for PID 1."""
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        return b"container=" in Path("/proc/1/environ").read_bytes()
    except OSError:
        return False
