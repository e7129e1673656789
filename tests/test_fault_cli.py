"""The CLI whose reader goes away (`edge clips list | head`): it ends quietly with status 0
(the reader had what it wanted, as `edge events` always said) and never prints a
BrokenPipeError traceback. Real subprocesses of `edge`, real SQLite files."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_config
from edge.events import Event, Kind
from edge.journal import Journal, journal_path
from edge.video.clip_index import ClipIndex, index_path
from edge.video.clips import ClipInfo

EDGE = str(Path(sys.executable).with_name("edge"))
ROWS = 300  # more than a pipe buffer holds once printed as JSON


@pytest.fixture
def site(tmp_path: Path) -> Path:
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'[site]\nid = "t-site"\n\n[paths]\ndata_dir = "{tmp_path / "data"}"\n')
    loaded = load_config(cfg)
    with Journal(journal_path(loaded)) as journal:
        journal.append_many([Event(Kind.BURGLARY, zone_id=f"z{n}") for n in range(ROWS)])
    folder = index_path(loaded).parent
    folder.mkdir(parents=True, exist_ok=True)
    with ClipIndex(index_path(loaded)) as index:
        for n in range(ROWS):
            mp4 = folder / f"cam1-c{n}.mp4"
            mp4.write_bytes(b"x" * 100)
            info = ClipInfo(
                id=f"c{n}", camera="cam1", event_ids=(f"e{n}",), path=mp4, snapshot=None,
                alarm_s=5.0, start_s=0.0, end_s=15.0, duration_s=15.0, bytes=100,
                sha256=hashlib.sha256(mp4.read_bytes()).hexdigest(), width=320, height=240,
                frames=150,
            )  # fmt: skip
            index.add(info, dt.datetime.now(dt.timezone.utc))
    return cfg


def run_reader_gone(*args: str) -> tuple[int, str]:
    """Run `edge ARGS` whose stdout pipe is closed before it writes (what `| head` does once
    it has its lines); returns the exit code and stderr."""
    proc = subprocess.Popen(
        [EDGE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the interpreter has started and printed anything
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=30), err


@pytest.mark.parametrize(
    "args",
    [
        ("clips", "list"),
        ("clips", "list", "--json"),
        ("events", "--json", "--limit", str(ROWS)),
        ("events", "--limit", "5"),  # small: the write fails only when stdout is flushed
        ("config", "check"),
    ],
)
def test_a_reader_that_goes_away_ends_the_command_quietly(site: Path, args: tuple[str]) -> None:
    code, err = run_reader_gone(*args, "--config", str(site))
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 0, err


def test_head_reads_the_first_lines_and_the_pipeline_ends_cleanly(site: Path) -> None:
    shell = f"set -o pipefail; {EDGE} clips list --config {site} | head -n 3"
    out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=30)
    assert len(out.stdout.splitlines()) == 3
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 0
