"""DC-09 sequence numbers on disk: blocks reserved before use, never reused after a crash."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge.uplink.dc09_sequence import BLOCK, SequenceStore


def test_in_memory_numbers_wrap_from_9999_to_0001() -> None:
    seq = SequenceStore(start=9998)
    assert [seq.take() for _ in range(4)] == [9998, 9999, 1, 2]
    assert not seq.exhausted
    with pytest.raises(ValueError):
        SequenceStore(start=10_000)


def test_a_block_is_reserved_on_disk_before_its_first_number_is_used(tmp_path: Path) -> None:
    path = tmp_path / "dc09.seq"
    seq = SequenceStore(path)
    assert seq.exhausted and not path.exists()  # nothing written until a number is needed
    assert seq.take() == 1
    assert path.read_text() == f"{1 + BLOCK:04d}\n"
    assert [seq.take() for _ in range(BLOCK - 1)] == list(range(2, BLOCK + 1))
    assert seq.exhausted
    assert seq.take() == BLOCK + 1
    assert path.read_text() == f"{1 + 2 * BLOCK:04d}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert [p.name for p in tmp_path.iterdir()] == ["dc09.seq"]  # no temporary file left


def test_a_run_killed_mid_block_never_lets_the_next_run_reuse_a_number(tmp_path: Path) -> None:
    path, used = tmp_path / "dc09.seq", []
    for run_length in (3, 1, BLOCK + 5, 0, 2):  # runs "killed" after that many messages
        seq = SequenceStore(path)  # a new process reads the file
        used += [seq.take() for _ in range(run_length)]
    assert used == sorted(used) and len(set(used)) == len(used), used
    assert used[:4] == [1, 2, 3, 1 + BLOCK]  # the rest of the first block is skipped


def test_the_reserved_end_wraps_past_9999(tmp_path: Path) -> None:
    path = tmp_path / "dc09.seq"
    path.write_text("9990\n")
    seq = SequenceStore(path, block=16)
    assert [seq.take() for _ in range(12)] == [*range(9990, 10_000), 1, 2]
    assert path.read_text() == "0007\n"  # 9990 + 16, wrapped
    assert SequenceStore(path).take() == 7


@pytest.mark.parametrize("content", ["", "banana\n", "0\n", "12345\n", "x" * 500])
def test_an_unreadable_file_restarts_at_0001_and_says_which_file(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dc09.seq"
    path.write_text(content)
    with caplog.at_level(logging.ERROR):
        assert SequenceStore(path).take() == 1
    assert str(path) in caplog.text and "remove the file" in caplog.text
    assert path.read_text() == f"{1 + BLOCK:04d}\n"  # and it is rewritten sound


def test_a_disk_that_refuses_the_write_does_not_stop_numbering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A directory that is not writable by anyone can still be written by root, so the
    # refusal is made certain by a path whose parent is a regular file (ENOTDIR).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    seq = SequenceStore(blocker / "dc09.seq")
    with caplog.at_level(logging.ERROR):
        assert [seq.take() for _ in range(BLOCK + 2)] == list(range(1, BLOCK + 3))
    assert caplog.text.count("cannot reserve numbers") == 2  # once per block, not per message
    assert "numbering goes on in memory" in caplog.text
