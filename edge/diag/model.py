"""What a check reports: a status, a sentence, the evidence, and the remedy."""

from __future__ import annotations

import dataclasses
from enum import IntEnum
from typing import Any


class Status(IntEnum):
    """Ordered by how much a maintainer should care: the report lists the worst first."""

    OK = 0
    UNKNOWN = 1  # the check could not look (off a Pi, no permission, a service down)
    WARN = 2
    FAIL = 3

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclasses.dataclass(frozen=True)
class Finding:
    """One check's verdict on one thing (the box, a zone, a camera, a transmission path).

    ``summary`` is one line an L1 maintainer reads; ``remedy`` is what they do about it (or
    "call a technician: …" with what to tell them); ``evidence`` holds the figures, in units
    named by their keys (``free_mb``, ``age_s``). ``arming`` marks a check whose failure
    refuses arming (like an open zone).
    """

    check: str
    status: Status
    summary: str
    remedy: str = ""
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    scope: str = "box"
    arming: bool = False
    since: str | None = None  # when this status was first seen (UTC ISO 8601)
    count: int = 1  # how many times the check has entered this status

    @property
    def key(self) -> str:
        """Identity of the finding across runs: one check on one thing."""
        return f"{self.check}@{self.scope}"

    def with_(self, **changes: Any) -> Finding:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["status"] = self.status.word
        return out


def ok(check: str, summary: str, **kw: Any) -> Finding:
    return Finding(check, Status.OK, summary, **kw)


def warn(check: str, summary: str, remedy: str, **kw: Any) -> Finding:
    return Finding(check, Status.WARN, summary, remedy, **kw)


def fail(check: str, summary: str, remedy: str, **kw: Any) -> Finding:
    return Finding(check, Status.FAIL, summary, remedy, **kw)


def unknown(check: str, summary: str, remedy: str = "", **kw: Any) -> Finding:
    return Finding(check, Status.UNKNOWN, summary, remedy, **kw)


def worst(findings: list[Finding]) -> Status:
    return max((f.status for f in findings), default=Status.OK)


def ordered(findings: list[Finding]) -> list[Finding]:
    """Worst first, then by check and scope, so the same state prints the same way."""
    return sorted(findings, key=lambda f: (-f.status, f.check, f.scope))
