"""`edge diag bundle`: one archive a maintainer sends to support, with nothing secret in it.

What is inside (``<name>/`` in a tar.gz), each part capped so the archive stays small enough
to mail from a phone (at most ``sum(CAPS)`` = 14 MiB before compression, a few hundred KiB in
practice):

* ``README.txt`` — what this is, when and where it was made, and the notes (what could not
  be collected, and why);
* ``diag.json`` — the report of `edge diag --json` (edge.diag.report.build);
* ``journal.jsonl`` — the last 1,000 journal events, one JSON object a line, as stored (UTC);
* ``services.log`` — journald's last 2,000 lines of edge-alarm, edge-video and edge-broker
  (`journalctl … -o short-iso`), or why there are none (no systemd, as in the demo);
* ``config.json`` — the effective site configuration, secrets masked (edge.diag.redact);
* ``versions.json`` — edge, Python, the OS and kernel, mosquitto, the main libraries.

Every part then goes through the site's :class:`~edge.diag.redact.Redactor`. The archive is
created 0600 for the caller (it describes the site), next to its final name, and renamed
into place once complete: a crash never leaves half an archive under the name printed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.diag.redact import Redactor, mask_config
from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.config import SiteConfig

JOURNAL_EVENTS = 1000
LOG_LINES = 2000
UNITS = ("edge-alarm", "edge-video", "edge-broker")
JOURNALCTL_S = 10.0
MIB = 1024 * 1024
CAPS = {
    "README.txt": 64 * 1024,
    "diag.json": 1 * MIB,
    "journal.jsonl": 4 * MIB,
    "services.log": 8 * MIB,
    "config.json": 512 * 1024,
    "versions.json": 64 * 1024,
}
LIBRARIES = ("paho-mqtt", "pydantic", "gpiozero", "aiortc", "av", "aiohttp", "numpy")


class BundleError(EdgeError, OSError):
    """The archive cannot be written where asked; the message says where and what to do."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    path: Path
    size: int
    notes: list[str]
    redacted: int  # secret matches taken out of the texts (0 on a healthy site)


def write(
    cfg: SiteConfig, report: dict[str, Any], output: Path | None, *, config_path: str = ""
) -> Bundle:
    """Collect every part, take the secrets out, write the archive; BundleError when the
    destination cannot be written."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%SZ")
    name = f"edge-bundle-{cfg.site.id}-{stamp}"
    dest = _destination(output, name)
    notes: list[str] = []
    redact = Redactor.for_site(cfg)
    notes += redact.notes
    parts = {
        "diag.json": json.dumps(report, indent=2, sort_keys=True) + "\n",
        "journal.jsonl": _journal(cfg, notes),
        "services.log": _service_logs(notes),
        "config.json": json.dumps(mask_config(cfg.model_dump(mode="json")), indent=2) + "\n",
        "versions.json": json.dumps(versions(cfg), indent=2, sort_keys=True) + "\n",
    }
    texts = {k: redact(_capped(k, v, notes)) for k, v in parts.items()}
    readme = _readme(cfg, config_path, stamp, notes, redact.hits)
    texts = {"README.txt": redact(_capped("README.txt", readme, notes)), **texts}
    size = _write_archive(dest, name, texts)
    return Bundle(dest, size, notes, redact.hits)


def _destination(output: Path | None, name: str) -> Path:
    """``--output`` as given (a directory: the archive inside it), else the current
    directory; an existing file is never overwritten."""
    target = output if output is not None else Path.cwd()
    if target.is_dir():
        target = target / f"{name}.tar.gz"
    if target.exists() or target.is_symlink():
        raise BundleError(
            f"{target} already exists: give another --output (the bundle never overwrites)"
        )
    if not target.parent.is_dir():
        raise BundleError(f"{target.parent} is not a directory: create it or give another --output")
    return target


def _journal(cfg: SiteConfig, notes: list[str]) -> str:
    from edge.errors import JournalError
    from edge.journal import Journal, journal_path

    path = journal_path(cfg)
    if not path.exists():
        notes.append(f"no journal at {path} (edge-alarm creates it on its first start)")
        return ""
    try:
        with Journal(path, readonly=True) as journal:
            events = journal.query(limit=JOURNAL_EVENTS)
    except JournalError as exc:
        notes.append(f"journal not read: {exc}")
        return ""
    notes.append(f"journal: the last {len(events)} event(s) of {path}")
    return "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in events)


def _service_logs(notes: list[str]) -> str:
    """journald's lines of the three units, or why there are none."""
    from edge.service_hint import systemd_running

    journalctl = shutil.which("journalctl")
    if journalctl is None:
        notes.append("services.log: no journalctl on this machine (no systemd journal)")
        return "journalctl is not installed here: no service logs.\n"
    argv = [journalctl, *(f"-u{u}" for u in UNITS), "-n", str(LOG_LINES), "-o", "short-iso"]
    argv.append("--no-pager")
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=JOURNALCTL_S, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"services.log: journalctl failed ({exc})")
        return f"journalctl failed: {exc}\n"
    out = done.stdout.decode("utf-8", "replace")
    err = done.stderr.decode("utf-8", "replace").strip()
    if not systemd_running():
        notes.append(
            "services.log: systemd is not running here (the demo or a test bench): the "
            "services log to the terminal that started them, so journald has nothing of them"
        )
    elif done.returncode != 0 or not out.strip() or out.strip() == "-- No entries --":
        notes.append(f"services.log: journald returned nothing (exit {done.returncode}; {err})")
    head = f"$ {' '.join(argv[1:])}\n(exit {done.returncode}{'; ' + err if err else ''})\n"
    return head + out


def versions(cfg: SiteConfig) -> dict[str, Any]:
    """What runs here: edge, Python, OS and kernel, mosquitto, the main libraries."""
    from importlib import metadata

    libs: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    return {
        "edge": __version__,
        "python": sys.version.split()[0],
        "os": _os_release(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "mosquitto": _mosquitto_version(),
        "libraries": libs,
        "site": cfg.site.id,
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _mosquitto_version() -> str | None:
    """'2.0.11' from `mosquitto -h` (it prints its version first, and exits 3)."""
    from edge.uplink.broker import mosquitto_binary

    try:
        binary = mosquitto_binary()
        done = subprocess.run(
            [binary, "-h"], capture_output=True, timeout=5, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, EdgeError, subprocess.TimeoutExpired):
        return None
    first = done.stdout.decode("utf-8", "replace").splitlines()[:1]
    words = first[0].split() if first else []
    return words[2] if len(words) >= 3 and words[1] == "version" else None


def _capped(name: str, text: str, notes: list[str]) -> str:
    data = text.encode("utf-8")
    cap = CAPS[name]
    if len(data) <= cap:
        return text
    notes.append(
        f"{name} cut at {cap // 1024} KiB (it had {len(data) // 1024} KiB): the newest kept"
    )
    if name in ("journal.jsonl", "services.log"):  # the newest lines are at the end
        kept = data[-cap:].decode("utf-8", "ignore")
        return kept[kept.find("\n") + 1 :]
    return data[:cap].decode("utf-8", "ignore") + f"\n[cut at {cap} bytes]\n"


def _readme(cfg: SiteConfig, config_path: str, stamp: str, notes: list[str], hits: int) -> str:
    lines = [
        f"Support bundle of site {cfg.site.id} ({cfg.site.name or 'no name'}), "
        f"edge {__version__}, made {stamp} (UTC) on {platform.node()} by `edge diag bundle`.",
        f"Site file: {config_path or '(default)'}; site time zone: {cfg.site.timezone}.",
        "",
        "diag.json      the diagnostics report (`edge diag --json`)",
        f"journal.jsonl  the last {JOURNAL_EVENTS} journal events (UTC times, as stored)",
        f"services.log   journald: the last {LOG_LINES} lines of {', '.join(UNITS)}",
        "config.json    the effective configuration; secrets masked, secret file paths kept",
        "versions.json  edge, Python, OS, kernel, mosquitto, libraries",
        "",
        "Secrets: the contents of every secret file the site names, and URL passwords, were "
        "searched for in every part and replaced by [redacted]"
        + (f" ({hits} match(es) taken out)." if hits else " (none found)."),
        "",
        "Notes:",
        *[f"- {n}" for n in notes],
    ]
    return "\n".join(lines) + "\n"


def _write_archive(dest: Path, name: str, texts: dict[str, str]) -> int:
    """Write the tar.gz at a temporary name (0600), then rename it to ``dest``."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise BundleError(
            f"cannot write in {dest.parent}: {exc.strerror or exc}; give --output PATH in a "
            "folder you may write (e.g. /tmp)"
        ) from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            now = time.time()
            for member, text in texts.items():
                data = text.encode("utf-8")
                info = tarfile.TarInfo(f"{name}/{member}")
                info.size, info.mtime, info.mode = len(data), int(now), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BundleError(f"cannot write {dest}: {exc}") from None
        raise
    return dest.stat().st_size
