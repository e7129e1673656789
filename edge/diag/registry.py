"""The checks, by name, with their hold-offs; and the run that applies them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

from edge.diag.holdoff import HoldOff
from edge.diag.model import Finding, ordered, unknown
from edge.diag.sources import Sources

log = logging.getLogger(__name__)

CheckFn = Callable[[Sources], Iterable[Finding]]


@dataclasses.dataclass(frozen=True)
class Check:
    name: str  # "family.what", the name `edge diag --check` takes
    fn: CheckFn
    holdoff_s: float
    about: str  # one line: what it looks at


CHECKS: dict[str, Check] = {}


def check(name: str, holdoff_s: float, about: str) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn`` as check ``name``."""

    def register(fn: CheckFn) -> CheckFn:
        if name in CHECKS:
            raise ValueError(f"check {name!r} is registered twice")
        CHECKS[name] = Check(name, fn, holdoff_s, about)
        return fn

    return register


def run(sources: Sources, holdoff: HoldOff, names: Iterable[str] | None = None) -> list[Finding]:
    """Every check (or those named), worst first; a check that breaks is ``unknown``, never a
    traceback: the diagnosis of a broken box must not break with it."""
    _load_families()
    chosen = [CHECKS[n] for n in names] if names is not None else list(CHECKS.values())
    found: list[Finding] = []
    for c in chosen:
        try:
            raw = list(c.fn(sources))
        except Exception as exc:
            log.exception("check %s failed", c.name)
            raw = [unknown(c.name, f"the check itself failed ({type(exc).__name__}: {exc})")]
        found += [holdoff.apply(f, c.holdoff_s) for f in raw]
    return ordered(found)


def _load_families() -> None:
    """Import the check modules (each registers its checks when imported)."""
    from edge.diag import checks  # noqa: F401
