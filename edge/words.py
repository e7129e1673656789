"""Figures as a person says them, shared by the CLI, the diagnostics and their reports."""

from __future__ import annotations


def duration(seconds: float, *, minutes_after_hours: bool = False) -> str:
    """45 s, 12 min, 5 h (or 5 h 20 min with ``minutes_after_hours``), 3 days."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172_800:
        return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if minutes_after_hours else "")
    return f"{s // 86_400} days"
