"""One error hierarchy for the whole package.

Every error a user can meet derives from :class:`EdgeError` and also from the builtin it
resembles, so callers may catch either. A user-facing message says what is wrong, where,
and how to fix it.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error raised on purpose by this package."""


class ConfigError(EdgeError, ValueError):
    """The site configuration cannot be used; the message lists every problem found."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the configuration:\n{lines}")


class JournalError(EdgeError, RuntimeError):
    """The event journal cannot be opened or written."""


class JournalTampered(JournalError):
    """`edge events verify` found a row whose hash chain does not hold."""


class BusError(EdgeError, ConnectionError):
    """The box broker could not be reached or refused a message."""


class HardwareError(EdgeError, OSError):
    """An input or output device could not be set up or read."""


class CommandError(EdgeError, ValueError):
    """A command (CLI or remote) is malformed or not allowed; the message says why."""


# Exit codes from sysexits.h that systemd and installers recognise.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_CONFIG = 78
