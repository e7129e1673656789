"""Clip index: lookups, retention by age, quota eviction order, and `edge clips` end to end."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import h264

from edge.cli import main
from edge.errors import EX_DATAERR, EX_USAGE
from edge.video.clip_index import QUOTA, RETENTION, ClipIndex, ClipIndexError, ClipRecord
from edge.video.clips import ClipInfo, ClipSession
from edge.video.ring import PacketRing

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def fake_clip(
    folder: Path, cid: str, *, camera: str = "cam1", events: tuple[str, ...] = ("e1",),
    size: int = 1000, snap: int = 100,
) -> ClipInfo:  # fmt: skip
    """Files of a given size: the index counts and deletes files, it never parses them."""
    folder.mkdir(parents=True, exist_ok=True)
    mp4, jpg = folder / f"{camera}-{cid}.mp4", folder / f"{camera}-{cid}.jpg"
    mp4.write_bytes(os.urandom(size))
    jpg.write_bytes(os.urandom(snap))
    return ClipInfo(
        id=cid, camera=camera, event_ids=events, path=mp4, snapshot=jpg, alarm_s=10.0,
        start_s=7.0, end_s=17.0, duration_s=10.0, bytes=size,
        sha256=hashlib.sha256(mp4.read_bytes()).hexdigest(), width=320, height=240, frames=100,
    )  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "data" / "clips"


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def index(folder: Path, clock: Clock) -> Iterator[ClipIndex]:
    with ClipIndex(folder / "index.db", clock=clock) as idx:
        yield idx


def test_add_and_find_by_clip_or_event(index: ClipIndex, folder: Path) -> None:
    info = fake_clip(folder, "c1", events=("e1", "e2"))
    rec = index.add(info, alarm_at=NOW)
    assert rec.start_ts == "2026-03-01T11:59:57.000Z"  # 3 s of pre-alarm before the alarm
    assert rec.end_ts == "2026-03-01T12:00:07.000Z"
    assert rec.event_ids == ("e1", "e2") and rec.path == info.path and not rec.delivered
    assert rec.disk_bytes == 1100 and index.used_bytes() == 1100
    other = index.add(fake_clip(folder, "c2", camera="cam2", events=("e2",)), NOW)
    assert [r.id for r in index.find("e2")] == ["c1", "c2"]
    assert index.find("c2") == [other] and index.find("nope") == []
    assert index.mark_delivered("c1") and not index.mark_delivered("nope")
    assert index.get("c1") == rec.__class__(**{**rec.__dict__, "delivered": True})
    assert [r.id for r in index.query(camera="cam2")] == ["c2"]


def test_retention_deletes_by_age_and_never_keeps_past_31_days(
    index: ClipIndex, folder: Path, clock: Clock
) -> None:
    for cid, age in (("d40", 40), ("d35", 35), ("d20", 20), ("d1", 1)):
        index.add(fake_clip(folder, cid), NOW - dt.timedelta(days=age))
    reported: list[tuple[str, str]] = []

    def on_deleted(rec: ClipRecord, reason: str) -> None:
        assert not rec.path.exists(), "report only once the files are gone"
        reported.append((rec.id, reason))

    index.enforce(retention_days=90, quota_bytes=10**9, on_deleted=on_deleted)  # law caps at 31
    assert reported == [("d40", RETENTION), ("d35", RETENTION)]
    clock.now = NOW + dt.timedelta(days=10)
    deleted = index.enforce(retention_days=25, quota_bytes=10**9, on_deleted=on_deleted)
    assert [(r.id, why) for r, why in deleted] == [("d20", RETENTION)]
    assert [r.id for r in index.query()] == ["d1"]
    assert sorted(p.name for p in folder.glob("*.mp4")) == ["cam1-d1.mp4"]
    with pytest.raises(ValueError, match="retention_days"):
        index.enforce(retention_days=0, quota_bytes=10**9)


def test_quota_evicts_delivered_oldest_first_and_undelivered_last(
    index: ClipIndex, folder: Path
) -> None:
    ages = {"a": 4, "b": 3, "c": 2, "d": 1}  # hours; b and d were delivered
    for cid, hours in ages.items():
        index.add(fake_clip(folder, cid), NOW - dt.timedelta(hours=hours))
    index.mark_delivered("b")
    index.mark_delivered("d")
    reported: list[tuple[str, str]] = []
    deleted = index.enforce(
        30, quota_bytes=2300, on_deleted=lambda r, w: reported.append((r.id, w))
    )
    assert reported == [("b", QUOTA), ("d", QUOTA)] == [(r.id, w) for r, w in deleted]
    assert index.used_bytes() == 2200
    index.enforce(30, quota_bytes=1100, on_deleted=lambda r, w: reported.append((r.id, w)))
    assert reported[2:] == [("a", QUOTA)]
    assert [r.id for r in index.query()] == ["c"] and index.used_bytes() == 1100
    assert index.enforce(30, quota_bytes=1100) == []


def test_sweep_removes_crash_leftovers_but_not_fresh_or_indexed_files(
    index: ClipIndex, folder: Path
) -> None:
    clock_now = time.time()
    index._clock = lambda: dt.datetime.fromtimestamp(clock_now, dt.timezone.utc)
    kept = index.add(fake_clip(folder, "kept"), dt.datetime.now(dt.timezone.utc))
    old_tmp, new_tmp, stray = folder / ".x.mp4.tmp", folder / ".y.mp4.tmp", folder / "z.mp4"
    for path in (old_tmp, new_tmp, stray):
        path.write_bytes(b"x")
    os.utime(old_tmp, (clock_now - 7200, clock_now - 7200))
    os.utime(stray, (clock_now - 40 * 86_400, clock_now - 40 * 86_400))
    os.utime(kept.path, (clock_now - 40 * 86_400, clock_now - 40 * 86_400))
    index.enforce(30, 10**9)
    assert not old_tmp.exists() and not stray.exists()
    assert new_tmp.exists() and kept.path.exists() and (folder / "index.db").exists()


def test_readonly_index_refuses_writes(index: ClipIndex, folder: Path) -> None:
    index.add(fake_clip(folder, "c1"), NOW)
    with ClipIndex(folder / "index.db", readonly=True) as ro:
        assert [r.id for r in ro.query()] == ["c1"]
        with pytest.raises(ClipIndexError, match="read-only"):
            ro.mark_delivered("c1")


# -- `edge clips` ---------------------------------------------------------------------------------
@pytest.fixture
def site(tmp_path: Path) -> Path:
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'[site]\nid = "t-site"\n\n[paths]\ndata_dir = "{tmp_path / "data"}"\n')
    return cfg


@pytest.fixture
def real_clip(folder: Path) -> Iterator[ClipRecord]:
    """One clip recorded from real H.264, indexed with the wall clock like the service does."""
    ring = PacketRing(2.0, 1 << 22)
    session: ClipSession | None = None
    for pkt in h264.encode(60):
        if session is None and pkt.seconds > 2.5:
            session = ClipSession("door", "ev-door", 2.5, 2.0, 1.0, ring, folder)
        ring.push(pkt)
        if session is not None and session.feed(pkt):
            break
    assert session is not None
    info = session.finish()
    with ClipIndex(folder / "index.db") as idx:
        yield idx.add(info, dt.datetime.now(dt.timezone.utc))


def edge(site: Path, *argv: str) -> int:
    return main(["clips", *argv[:1], "--config", str(site), *argv[1:]])


def test_cli_list_show_and_filters(
    site: Path, folder: Path, real_clip: ClipRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    with ClipIndex(folder / "index.db") as idx:
        idx.add(fake_clip(folder, "old", camera="yard"), NOW - dt.timedelta(days=2))
    assert edge(site, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "camera yard" in lines[0] and real_clip.id[:8] in lines[1]
    assert "events: ev-door" in lines[1] and "not yet delivered" in lines[1]
    assert edge(site, "list", "--since", "1h", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [real_clip.id] and rows[0]["sha256"] == real_clip.sha256
    assert edge(site, "list", "--camera", "yard") == 0
    assert "camera yard" in capsys.readouterr().out
    assert edge(site, "show", "ev-door") == 0
    out = capsys.readouterr().out
    assert f"clip {real_clip.id}" in out and "present" in out and real_clip.sha256 in out
    assert edge(site, "show", "unknown-id") == 66
    assert "no clip with id or event id 'unknown-id'" in capsys.readouterr().err
    assert edge(site, "list", "--since", "yesterday") == EX_USAGE
    assert "--since 'yesterday' is not a time" in capsys.readouterr().err


def test_cli_export_copies_files_with_sidecar(
    site: Path, tmp_path: Path, real_clip: ClipRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "usb"
    assert edge(site, "export", real_clip.id, str(dest)) == 0
    assert f"exported clip {real_clip.id}" in capsys.readouterr().out
    video, snap = dest / f"{real_clip.id}.mp4", dest / f"{real_clip.id}.jpg"
    assert video.read_bytes() == real_clip.path.read_bytes()
    assert snap.read_bytes()[:2] == b"\xff\xd8"
    meta = json.loads((dest / f"{real_clip.id}.json").read_text())
    assert meta["intact"] is True and meta["site"] == "t-site"
    assert meta["files"]["video"]["sha256"] == real_clip.sha256
    assert meta["files"]["snapshot"]["sha256"] == real_clip.snapshot_sha256
    assert meta["clip"]["event_ids"] == ["ev-door"] and meta["clip"]["start_ts"]

    with real_clip.path.open("r+b") as f:  # damage the stored clip: export says so
        f.seek(100)
        f.write(b"\x00" * 16)
    assert edge(site, "export", "ev-door", str(tmp_path / "usb2")) == EX_DATAERR
    assert "does not match the SHA-256" in capsys.readouterr().err
    assert json.loads((tmp_path / "usb2" / f"{real_clip.id}.json").read_text())["intact"] is False

    real_clip.path.unlink()
    assert edge(site, "export", real_clip.id, str(tmp_path / "usb3")) == 66
    assert "is missing" in capsys.readouterr().err
    assert not (tmp_path / "usb3").exists()


def test_cli_without_index_says_so(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert edge(site, "list") == 0
    assert "no clips yet" in capsys.readouterr().err
    assert edge(site, "show", "x") == 66
    assert edge(site, "export", "x", "/nonexistent/dest") == 66
