"""`edge demo`: the whole site box on simulated hardware, in one terminal.

Starts a box broker (mosquitto), edge-alarm on the demo site, then follows the journal.
Everything it starts is stopped on Ctrl-C. Nothing outside the repository's .demo/ changes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge.errors import EX_UNAVAILABLE, ConfigError

DEMO_SITE = Path("hw-sim/sites/demo.toml")
DEMO_WEB_USER = "installer"


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run the site box on simulated hardware", parents=parents)
    parser.add_argument(
        "--no-follow",
        action="store_true",
        help="start everything, print how to use it, and wait (no event list)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge.config import load_config

    path = Path(args.config) if args.config else DEMO_SITE
    cfg = load_config(path)  # a ConfigError is reported by edge.cli (exit 78)
    procs: list[subprocess.Popen[bytes]] = []
    # SIGTERM (systemd, `kill`, a closed terminal's session) unwinds like Ctrl-C, so the
    # `finally` below stops the broker and the services instead of leaving them running.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        procs.append(_start_broker(cfg))
        procs.append(_start_service("alarm", path))
        if not _wait_ready(cfg, procs[-1]):
            return EX_UNAVAILABLE
        web_user = _web_user(cfg) if cfg.video.cameras and cfg.web.enabled else None
        if cfg.video.cameras:
            procs.append(_start_service("video", path, quiet=True))
        _explain(path, cfg)
        if web_user:
            print(web_user)
        if args.no_follow:
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
            return EX_UNAVAILABLE
        return _follow(path)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start_broker(cfg: Any) -> subprocess.Popen[bytes]:
    from edge.uplink.broker import mosquitto_binary, write_config

    if _listening(cfg.bus.url):
        raise ConfigError(
            "bus.url",
            [
                f"something already listens on {cfg.bus.url}: stop it "
                "(another demo?) or change bus.url in the demo site"
            ],
        )
    run_dir = Path(cfg.paths.run_dir)
    _identities(cfg)
    conf = write_config(cfg, run_dir / "mosquitto.conf")
    log = open(run_dir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the child
    print(f"· box broker (mosquitto) on {cfg.bus.url}, log {run_dir / 'mosquitto.log'}")
    return subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log)


def _identities(cfg: Any) -> None:
    """`edge bus init` for the demo: its identities live beside the demo's data."""
    from edge.bus import identity, passwd_file

    root = Path(cfg.bus.identities_dir)
    passwd_file.ensure(root, [*identity.SERVICES, identity.DEFAULT_LOCAL_USER])
    passwd_file.write_passwd(root)
    print(f"· box-bus identities in {root} (the broker admits no anonymous client)")


def _start_service(name: str, path: Path, quiet: bool = False) -> subprocess.Popen[bytes]:
    """`edge run NAME`; a quiet service logs warnings only, so the event list stays readable."""
    exe = Path(sys.executable).with_name("edge")
    cmd = [
        str(exe) if exe.exists() else sys.executable,
        *([] if exe.exists() else ["-m", "edge.cli"]),
        "run",
        name,
        "--config",
        str(path),
        *(["--log-level", "WARNING"] if quiet else []),
    ]
    print(f"· edge-{name}: {shlex.join(cmd)}")
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _listening(url: str) -> bool:
    if not url.startswith("mqtt://"):
        return Path(url[len("unix://") :]).exists()
    host, port = url[len("mqtt://") :].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, int(port))) == 0


def _wait_ready(cfg: Any, alarm: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """Ready when edge-alarm has published its retained status on the box bus."""
    from edge.bus import Topics, receive_once
    from edge.bus.identity import DEFAULT_LOCAL_USER, load_credentials
    from edge.errors import BusError

    me = load_credentials(cfg.bus.identities_dir, DEFAULT_LOCAL_USER)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alarm.poll() is not None:
            print(
                f"edge-alarm exited with code {alarm.returncode}; see its messages above",
                file=sys.stderr,
            )
            return False
        try:
            receive_once(cfg.bus.url, Topics.ALARM_STATUS, timeout=1.0, credentials=me)
            return True
        except (BusError, TimeoutError):
            time.sleep(0.2)
    print("edge-alarm did not come up within 10 s", file=sys.stderr)
    return False


def _web_user(cfg: Any) -> str:
    """The demo's web user, with a fresh password each run (a box has no default one)."""
    import secrets  # not at module level: edge-alarm's CLI must not load OpenSSL (lean.py)

    from edge.web.credentials import set_password

    password = secrets.token_urlsafe(12)
    set_password(Path(cfg.web.credentials_file), DEMO_WEB_USER, password, site_id=cfg.site.id)
    host = "127.0.0.1" if cfg.web.listen in ("0.0.0.0", "::") else cfg.web.listen
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if cfg.web.https else "http"
    text = (
        f"Live view: {scheme}://{host}:{cfg.web.port}/  user {DEMO_WEB_USER}, password {password}\n"
    )
    if cfg.web.https and not cfg.web.tls_cert:
        from edge.web.tls import ensure_certificate, fingerprint, read_certificate

        path, _ = ensure_certificate(cfg.web, cfg.site.id)
        text += f"  certificate SHA-256 {fingerprint(read_certificate(path))}\n"
    return text


def _explain(path: Path, cfg: Any) -> None:
    exe = Path(sys.executable).with_name("edge")
    edge = shlex.quote(os.path.relpath(exe) if exe.is_relative_to(Path.cwd()) else str(exe))
    c = f"--config {shlex.quote(str(path))}"
    zones = ", ".join(z.id for z in cfg.zones)
    port = cfg.bus.url.rsplit(":", 1)[-1]
    watch_pw = shlex.quote(os.path.relpath(Path(cfg.bus.identities_dir, "installer")))
    print(f"""
The site box is running on simulated hardware (site {cfg.site.id}; zones: {zones}).
In another terminal, from this directory:

  {edge} sim trip lid {c}           # box tamper: reported even when disarmed
  {edge} sim restore lid {c}
  {edge} panel arm {c}              # exit delay {cfg.partitions[0].exit_delay_s} s
  {edge} sim trip hall {c}          # instant zone: burglary alarm, siren on
  {edge} sim trip window {c}        # second zone: confirmed alarm (BV / 139)
  {edge} sim set hall 2000 {c}      # a reading between bands: loop fault
  {edge} panel disarm {c}
  {edge} events verify {c}          # check the journal's hash chain
  {edge} clips list {c}             # alarm clips of the demo camera (pre + post alarm)
  # watch the box bus as the installer:
  mosquitto_sub -p {port} -u installer -P "$(cat {watch_pw})" -t 'edge/#' -v

Events appear below as they are journaled. Ctrl-C stops everything.
""")


def _follow(path: Path) -> int:
    from edge.cli import main

    try:
        return main(["events", "--follow", "--limit", "20", "--config", str(path)])
    except KeyboardInterrupt:
        return 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
