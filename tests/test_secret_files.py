"""The one rule for secret files, on real files: kinds, owners, modes, sizes, and atomic writes."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.secret_files import (
    MAX_SECRET_BYTES,
    FileCheckError,
    SecretFileError,
    read_secret,
    read_small_file,
    secret_problem,
    write_secret,
)

CONTENT = b"s3cr3t-value-never-shown\n"
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def secret(tmp_path: Path, mode: int = 0o600, data: bytes = CONTENT, name: str = "k") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def refused(path: Path | str, match: str, **kw: object) -> str:
    with pytest.raises(SecretFileError, match=match) as info:
        read_secret(path, "test.key_file", **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("test.key_file: ")
    assert CONTENT.decode().strip() not in message  # never the secret itself
    return message


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


# --- reading -----------------------------------------------------------------------------------


def test_a_regular_private_file_is_read(tmp_path: Path) -> None:
    path = secret(tmp_path)
    assert read_secret(path, "k") == CONTENT
    assert read_secret(str(path), "k") == CONTENT
    assert secret_problem(path) is None


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    start = time.monotonic()
    refused(fifo, "not a regular file")
    assert time.monotonic() - start < 1.0  # nobody writes to it: opening would have hung
    assert "not a regular file" in str(secret_problem(fifo))


def test_dev_zero_is_refused_not_read() -> None:
    start = time.monotonic()
    message = refused("/dev/zero", "not a regular file")
    assert "point the configuration at a plain file" in message
    assert time.monotonic() - start < 1.0
    with pytest.raises(FileCheckError, match="not a regular file"):
        read_small_file("/dev/zero", "public key")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "is a directory")
    with pytest.raises(FileCheckError, match="is a directory"):
        read_small_file(tmp_path, "public key")


def test_a_symbolic_link_is_refused_even_to_a_good_secret(tmp_path: Path) -> None:
    target = secret(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target)
    refused(link, "symbolic link")
    assert "symbolic link" in str(secret_problem(link))
    # a non-secret file may be reached through a link
    assert read_small_file(link, "public key") == CONTENT


def test_too_big_is_refused_at_the_cap_not_truncated(tmp_path: Path) -> None:
    assert read_secret(secret(tmp_path, data=b"x" * MAX_SECRET_BYTES), "k") == b"x" * 65536
    refused(secret(tmp_path, data=b"x" * (MAX_SECRET_BYTES + 1)), f"larger than {MAX_SECRET_BYTES}")
    refused(secret(tmp_path, data=b"y" * 33), "larger than 32 bytes", max_bytes=32)
    with pytest.raises(FileCheckError, match="larger than 4 bytes"):
        read_small_file(secret(tmp_path, data=b"12345"), "public key", max_bytes=4)


def test_the_cap_counts_bytes_read_not_the_size_the_file_claims() -> None:
    # /proc files are regular files that report a size of 0
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(FileCheckError, match="larger than 16 bytes"):
        read_small_file("/proc/self/status", "status", max_bytes=16)


def test_mode_0644_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    path = secret(tmp_path, 0o644)
    message = refused(path, "mode 0644")
    assert f"chmod 600 {path}" in message
    assert "chmod 600" in str(secret_problem(path))


def test_group_read_only_where_the_caller_allows_it(tmp_path: Path) -> None:
    path = secret(tmp_path, 0o640)
    refused(path, "mode 0640")
    assert read_secret(path, "k", group_read=True) == CONTENT
    assert secret_problem(path, group_read=True) is None
    assert "chmod 640" in refused(secret(tmp_path, 0o660, name="gw"), "0660", group_read=True)
    assert "chmod 640" in refused(secret(tmp_path, 0o644, name="or"), "0644", group_read=True)


@as_root
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = secret(tmp_path)
    os.chown(path, NOBODY, NOBODY)
    message = refused(path, f"belongs to uid {NOBODY}")
    assert "chown it" in message
    assert f"uid {NOBODY}" in str(secret_problem(path))


def test_a_nul_byte_in_the_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    bad = f"{tmp_path}/a\0b"
    refused(bad, "NUL byte")
    assert "NUL byte" in str(secret_problem(bad))
    with pytest.raises(FileCheckError, match="NUL byte"):
        read_small_file(bad, "public key")
    with pytest.raises(SecretFileError, match="NUL byte"):
        write_secret(bad, b"x")


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    assert "create it (mode 0600)" in refused(tmp_path / "absent", "does not exist")
    assert "does not exist" in str(secret_problem(tmp_path / "absent"))
    assert secret_problem(tmp_path / "absent", missing_ok=True) is None
    # missing_ok does not excuse a present but bad file
    assert "0644" in str(secret_problem(secret(tmp_path, 0o644), missing_ok=True))


def test_control_characters_in_a_path_are_escaped_in_messages(tmp_path: Path) -> None:
    message = refused(tmp_path / "evil\x1b[31m\n", "does not exist")
    assert "\x1b" not in message and "\n" not in message and "\\x1b" in message


# --- writing -----------------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_write_secret_mode_is_exact_even_with_umask_0(tmp_path: Path, umask: None) -> None:
    path = write_secret(tmp_path / "sub" / "a.key", CONTENT)
    assert mode_of(path) == 0o600 and path.read_bytes() == CONTENT
    shared = write_secret(tmp_path / "b.key", CONTENT, group_read=True)
    assert mode_of(shared) == 0o640
    assert read_secret(path, "k") == CONTENT  # what we write passes our own rule
    assert read_secret(shared, "k", group_read=True) == CONTENT


def test_write_secret_mode_is_exact_under_a_narrow_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        assert mode_of(write_secret(tmp_path / "c.key", CONTENT, group_read=True)) == 0o640
    finally:
        os.umask(old)


def test_write_secret_replaces_an_open_file_with_a_closed_one(tmp_path: Path, umask: None) -> None:
    path = secret(tmp_path, 0o666)
    write_secret(path, b"new")
    assert mode_of(path) == 0o600 and path.read_bytes() == b"new"


def test_a_file_planted_at_the_old_temporary_name_is_never_reused(tmp_path: Path) -> None:
    planted = tmp_path / ".a.key.tmp"
    planted.write_bytes(b"planted")
    os.chmod(planted, 0o666)
    path = write_secret(tmp_path / "a.key", CONTENT)
    assert path.read_bytes() == CONTENT and mode_of(path) == 0o600
    assert planted.read_bytes() == b"planted"  # neither written through nor renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.key.tmp", "a.key"]


def test_a_symlink_planted_at_the_temporary_or_final_name_is_never_followed(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim")
    os.chmod(victim, 0o644)
    (tmp_path / ".a.key.tmp").symlink_to(victim)
    final = tmp_path / "a.key"
    final.symlink_to(victim)
    write_secret(final, CONTENT)
    assert victim.read_bytes() == b"victim" and mode_of(victim) == 0o644
    assert not final.is_symlink() and final.read_bytes() == CONTENT and mode_of(final) == 0o600


@as_root
def test_write_secret_gives_the_file_to_its_owner(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "svc.key", CONTENT, owner=(NOBODY, NOBODY))
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid, mode_of(path)) == (NOBODY, NOBODY, 0o600)


def test_write_secret_refuses_too_much_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match="at most"):
        write_secret(tmp_path / "big", b"x" * (MAX_SECRET_BYTES + 1))
    (tmp_path / "dir").mkdir()
    with pytest.raises(SecretFileError, match="cannot write"):
        write_secret(tmp_path / "dir", CONTENT)  # a directory stands at the name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
