"""Run the real `edge diag` (a subprocess, as a maintainer would) and read its report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EDGE = str(Path(sys.executable).with_name("edge"))


@dataclass
class Diag:
    rc: int
    report: dict[str, Any]
    wall_s: float
    stderr: str

    def finding(self, check: str, scope: str = "box") -> dict[str, Any]:
        for f in self.report["findings"]:
            if f["check"] == check and f["scope"] == scope:
                return f  # type: ignore[no-any-return]
        raise AssertionError(f"no finding {check}@{scope} in {self.brief()}")

    def status(self, check: str, scope: str = "box") -> str:
        for f in self.report["findings"]:
            if f["check"] == check and f["scope"] == scope:
                return str(f["status"])
        return "absent"

    def brief(self) -> list[str]:
        return [
            f"{f['status']} {f['check']}@{f['scope']}: {f['summary']}"
            for f in self.report["findings"]
        ]


def diag(site: Path, *checks: str, identity: str | None = None) -> Diag:
    """`edge diag --json [--check NAME]…` on ``site``."""
    args = [EDGE, "diag", "--json", "--config", str(site)]
    for name in checks:
        args += ["--check", name]
    if identity:
        args += ["--as", identity]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    wall = time.monotonic() - started
    assert "Traceback" not in done.stderr, done.stderr
    return Diag(done.returncode, json.loads(done.stdout), wall, done.stderr)


def text(site: Path, *checks: str) -> subprocess.CompletedProcess[str]:
    """`edge diag` as a person reads it (the table in words)."""
    args = [EDGE, "diag", "--config", str(site)]
    for name in checks:
        args += ["--check", name]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def until(
    site: Path, done: Callable[[Diag], bool], timeout: float, *checks: str, every: float = 1.0
) -> Diag:
    """Run `edge diag` until ``done(report)`` holds (the hold-offs need repeated runs)."""
    deadline = time.monotonic() + timeout
    while True:
        got = diag(site, *checks)
        if done(got):
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s; last report: {got.brief()}")
        time.sleep(every)
