"""Shared set-up for the benchmarks: a real mosquitto and the real `edge run alarm`."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.alarm import BusWatcher, NotifySocket, rss_mb, start_alarm, stop, write_site  # noqa: E402
from support.broker import start_mosquitto  # noqa: E402

__all__ = [
    "BusWatcher",
    "NotifySocket",
    "percentile",
    "rss_mb",
    "start_alarm",
    "start_mosquitto",
    "stop",
    "write_site",
]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1] if p < 100 else ordered[-1]


def median(values: list[float]) -> float:
    return statistics.median(values)
