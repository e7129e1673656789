"""Web users: scrypt lines, reload on change, damaged lines, and `edge web` from a shell."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge.web.credentials import (
    SCRYPT_N,
    Credentials,
    CredentialsError,
    remove_user,
    set_password,
    users,
)

PASSWORD = "correct horse battery"


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "web-users"


def test_round_trip_and_wrong_password(users_file: Path) -> None:
    assert set_password(users_file, "installer", PASSWORD) is True
    line = users_file.read_text().strip()
    user, scheme, n, r, p, salt, digest = line.split(":")
    assert (user, scheme, int(n), int(r), int(p)) == ("installer", "scrypt", SCRYPT_N, 8, 1)
    assert PASSWORD not in line and len(salt) == 24 and len(digest) == 44
    creds = Credentials(users_file)
    assert creds.configured
    assert creds.verify("installer", PASSWORD)
    assert creds.verify("installer", PASSWORD)  # second time from the remembered check
    assert not creds.verify("installer", PASSWORD + "x")
    assert not creds.verify("installer", "")
    assert not creds.verify("nobody", PASSWORD)


def test_same_password_gets_a_new_salt(users_file: Path) -> None:
    set_password(users_file, "a", PASSWORD)
    first = users_file.read_text()
    assert set_password(users_file, "a", PASSWORD) is False  # changed, not created
    assert users_file.read_text() != first and users(users_file) == ["a"]


def test_file_and_directory_modes(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "secrets" / "web-users"
    set_password(target, "installer", PASSWORD)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o750
    assert not list(target.parent.glob(".*tmp"))


def test_a_file_others_may_read_is_refused_with_the_fix(
    users_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The secret-file rule (edge.secret_files): loosened by hand, it is not used at all."""
    set_password(users_file, "installer", PASSWORD)
    users_file.chmod(0o644)
    with pytest.raises(CredentialsError, match=f"chmod 600 {users_file}"):
        set_password(users_file, "second", PASSWORD)
    creds = Credentials(users_file)
    with caplog.at_level(logging.ERROR, logger="edge.web.credentials"):
        assert not creds.configured and not creds.verify("installer", PASSWORD)
    assert creds.problem is not None and f"chmod 600 {users_file}" in creds.problem
    users_file.chmod(0o600)
    assert creds.verify("installer", PASSWORD) and creds.problem is None


def test_reload_when_the_file_changes(users_file: Path) -> None:
    set_password(users_file, "installer", PASSWORD)
    creds = Credentials(users_file)
    assert creds.verify("installer", PASSWORD)
    set_password(users_file, "installer", "another password 2")
    assert not creds.verify("installer", PASSWORD)  # the remembered success is forgotten
    assert creds.verify("installer", "another password 2")
    set_password(users_file, "tech", PASSWORD)
    assert creds.verify("tech", PASSWORD)
    assert remove_user(users_file, "installer") is True
    assert not creds.verify("installer", "another password 2")
    assert remove_user(users_file, "installer") is False
    assert users(users_file) == ["tech"]
    remove_user(users_file, "tech")
    assert users_file.read_text() == "" and not creds.configured


def test_missing_or_empty_file_is_not_configured(users_file: Path) -> None:
    creds = Credentials(users_file)
    assert not creds.configured and not creds.verify("installer", PASSWORD)
    assert users(users_file) == []
    users_file.parent.mkdir()
    users_file.write_text("\n# no user yet\n")
    users_file.chmod(0o600)
    assert not creds.configured
    set_password(users_file, "installer", PASSWORD)
    assert creds.configured


def test_corrupt_line_is_skipped_with_one_warning(
    users_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_password(users_file, "good", PASSWORD)
    good = users_file.read_text()
    users_file.write_text(
        "broken line without fields\n" + good + f"bad:scrypt:3:8:1:{'A' * 22}==:{'A' * 43}=\n"
    )
    creds = Credentials(users_file)
    with caplog.at_level(logging.WARNING, logger="edge.web.credentials"):
        assert creds.verify("good", PASSWORD)
        assert creds.verify("good", PASSWORD) and creds.configured
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings  # one per damaged line, not one per check
    assert "line 1 skipped" in warnings[0] and "line 3 skipped" in warnings[1]
    assert "out of range" in warnings[1]
    assert users(users_file) == ["good"]
    set_password(users_file, "other", PASSWORD)  # damaged lines are kept for the installer
    assert "broken line without fields" in users_file.read_text()


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("bad:name", PASSWORD, "user name 'bad:name' is not allowed: use 1 to 32 letters"),
        ("", PASSWORD, "is not allowed"),
        ("x" * 33, PASSWORD, "is not allowed"),
        ("installer", "short", "password too short (5 characters): use at least 10"),
        ("installer", "ten chars\nbut a newline", "line break"),
        ("installer", "Password123!", "password too common"),
        ("installer", "P@ssw0rd2024", "password too common"),
        ("installer", "azertyuiop", "password too common"),
        ("installer", "1234567890", "password too common"),
        ("installer", "qwertyqwerty", "password too common"),
        ("installer", "Soleil2023!", "password too common"),
        ("installer", "aaaaaaaaaaaa", "password too repetitive"),
        ("installer", "Installer2024!", "password contains the user name (installer)"),
    ],
)
def test_refused_names_and_passwords(
    users_file: Path, user: str, password: str, message: str
) -> None:
    with pytest.raises(CredentialsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        set_password(users_file, user, password)
    assert not users_file.exists()


def test_a_password_made_of_the_site_id_is_refused(users_file: Path) -> None:
    with pytest.raises(CredentialsError, match=r"contains the site id \(north-gate\)"):
        set_password(users_file, "tech", "North-Gate-2024", site_id="north-gate")


def test_allowed_user_name_characters(users_file: Path) -> None:
    set_password(users_file, "jane.doe-2_x@site", PASSWORD)
    assert Credentials(users_file).verify("jane.doe-2_x@site", PASSWORD)


# -- `edge web` ---------------------------------------------------------------------------------
def edge_web(site: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge.cli", "web", *argv, "--config", str(site)]
    env = {k: v for k, v in os.environ.items() if k != "EDGE_CONFIG"}
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30, env=env)


@pytest.fixture
def site(tmp_path: Path, users_file: Path) -> Path:
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'[site]\nid = "t-site"\n\n[web]\ncredentials_file = "{users_file}"\n')
    return cfg


def test_cli_passwd_users_remove(site: Path, users_file: Path) -> None:
    empty = edge_web(site, "users")
    assert empty.returncode == 0 and empty.stdout == ""
    assert "edge web passwd USER" in empty.stderr
    done = edge_web(site, "passwd", "installer", stdin=PASSWORD + "\n")  # not a tty: one line
    assert done.returncode == 0, done.stderr
    assert f"created user installer in {users_file}" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    assert Credentials(users_file).verify("installer", PASSWORD)
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    changed = edge_web(site, "passwd", "installer", "--stdin", stdin="a new password!\n")
    assert "changed the password of installer" in changed.stdout
    assert Credentials(users_file).verify("installer", "a new password!")
    edge_web(site, "passwd", "tech", "--stdin", stdin=PASSWORD + "\n")
    assert edge_web(site, "users").stdout.split() == ["installer", "tech"]
    removed = edge_web(site, "remove", "installer")
    assert removed.returncode == 0 and "removed user installer" in removed.stdout
    assert edge_web(site, "users").stdout.split() == ["tech"]


def test_cli_errors_are_sentences(site: Path, users_file: Path) -> None:
    short = edge_web(site, "passwd", "installer", "--stdin", stdin="short\n")
    assert short.returncode == 64
    assert short.stderr == (
        "error: password too short (5 characters): use at least 10, e.g. four unrelated words\n"
    )
    bad = edge_web(site, "passwd", "in stall", "--stdin", stdin=PASSWORD + "\n")
    assert bad.returncode == 64 and "user name 'in stall' is not allowed" in bad.stderr
    nothing = edge_web(site, "passwd", "installer", "--stdin")
    assert nothing.returncode == 64 and "no password on standard input" in nothing.stderr
    unknown = edge_web(site, "remove", "ghost")
    assert unknown.returncode == 64 and "no user 'ghost'" in unknown.stderr
    assert "Traceback" not in short.stderr + bad.stderr + nothing.stderr + unknown.stderr
    assert not users_file.exists()


def test_cli_bad_config_exits_78(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text('[site]\nid = "t-site"\n\n[web]\ncredentials = "/x"\n')
    out = edge_web(cfg, "users")
    assert out.returncode == 78 and "web.credentials" in out.stderr
    assert "unknown key" in out.stderr


def test_the_command_does_not_load_the_web_server() -> None:
    """`edge web passwd` runs on a box where edge-video may be broken: no aiohttp, no hub."""
    code = (
        "import sys, edge.cli, edge.commands.web, edge.web.credentials; "
        "print(sorted(m for m in ('aiohttp', 'aiortc', 'edge.web.server') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_config_may_come_before_the_action(site: Path, users_file: Path) -> None:
    """`edge web --config X users` and `edge web users --config X` mean the same file."""
    edge_web(site, "passwd", "tech", "--stdin", stdin=PASSWORD + "\n")
    env = {k: v for k, v in os.environ.items() if k != "EDGE_CONFIG"}
    cmd = [sys.executable, "-m", "edge.cli", "web", "--config", str(site), "users"]
    before = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert before.returncode == 0, before.stderr
    assert before.stdout.split() == ["tech"]


# -- run as root: the file goes to the service user ---------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@needs_root
def test_as_root_the_file_is_given_to_the_service_user_and_still_readable(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import pwd
    import tempfile

    from edge.commands.web import service_owner

    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own tmp is root's 0700
    try:
        base.chmod(0o711)
        (base / "secrets").mkdir(mode=0o711)
        target = base / "secrets" / "web-users"
        owner, hint = service_owner(target, names=("no-such-user-here", "nobody"))
        assert owner == (nobody.pw_uid, nobody.pw_gid) and hint == ""
        set_password(target, "installer", PASSWORD, owner=owner)
        st = target.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, 0o600)
        # root reads it again (as its owner, which proves the service can) to add a user
        set_password(target, "tech", PASSWORD, owner=owner)
        assert users(target, owner=owner) == ["installer", "tech"]
        assert target.stat().st_uid == nobody.pw_uid and os.geteuid() == 0
    finally:
        import shutil

        shutil.rmtree(base)


@needs_root
def test_as_root_without_a_service_user_it_says_what_to_run(site: Path, users_file: Path) -> None:
    import pwd

    for name in ("edge-video", "edge"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            pytest.skip(f"user {name} exists on this machine")
    done = edge_web(site, "passwd", "installer", "--stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert "no user edge-video or edge on this box" in done.stderr
    assert f"chown edge-video:edge-video {users_file} && chmod 600 {users_file}" in done.stderr


def test_cli_cert_makes_the_certificate_once_and_shows_its_fingerprint(
    site: Path, users_file: Path
) -> None:
    first = edge_web(site, "cert")
    assert first.returncode == 0, first.stderr
    pem = users_file.parent / "web-tls.pem"
    assert f"made certificate {pem}" in first.stdout
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    line = next(ln for ln in first.stdout.splitlines() if ln.startswith("SHA-256 fingerprint:"))
    assert len(line.split(": ", 1)[1].split(":")) == 32
    again = edge_web(site, "cert")
    assert again.returncode == 0 and "made" not in again.stdout and line in again.stdout
    plain = site.parent / "plain.toml"
    plain.write_text(site.read_text() + "https = false\n")
    off = edge_web(plain, "cert")
    assert off.returncode == 0 and "plain HTTP" in off.stdout
