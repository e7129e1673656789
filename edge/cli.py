"""`edge` command line: one entry point, one module per subcommand under edge/commands/.

Subcommand modules import only what they need inside their ``run`` functions, so that
`edge run alarm` starts fast and never pulls in video libraries.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

from edge import __version__
from edge.errors import (
    EX_CONFIG,
    EX_OK,
    EX_SOFTWARE,
    EX_USAGE,
    CommandError,
    ConfigError,
    EdgeError,
)

# Subcommand modules, each exposing register(subparsers, parents).
COMMANDS: tuple[str, ...]
COMMANDS = ("config", "run", "events", "panel", "sim", "demo", "clips", "motion", "web", "bus")
COMMANDS += ("diag",)  # level-1 diagnostics (edge/diag/)
COMMANDS += ("units",)  # systemd drop-ins generated from the site file (edge/commands/units.py)


# Written as escapes when an error is printed: control characters (except the line feed that
# separates problems), line separators and bidirectional overrides. An error that quotes a
# hostile value must not be able to drive the installer's terminal.
_UNPRINTABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _error(exc: BaseException) -> str:
    """The line(s) printed for an error, control characters written as escapes."""
    return "error: " + _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], str(exc))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        # SUPPRESS: a nested sub-command must not reset a --config given before its action
        # (`edge clips --config X list`); main() fills in None when none was given.
        default=argparse.SUPPRESS,
        help="site configuration (default: $EDGE_CONFIG, else /etc/edge/site.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Site box firmware: alarm loops, event journal, transmission, video.",
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"edge.commands.{name}")
        module.register(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that goes away (`edge clips list | head`) ends it quietly.

    Python ignores SIGPIPE, so writing to a closed pipe raises BrokenPipeError, and would
    again when the interpreter flushes stdout at exit. As the Python documentation advises
    (signal module, "Note on SIGPIPE"): flush inside the try, and on the error point stdout
    at /dev/null, without a traceback. The exit status is 0, as `edge events` has always
    done: the reader had what it wanted."""
    try:
        code = _run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EX_OK
    return code


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "config"):
        args.config = None
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(_error(exc), file=sys.stderr)
        return EX_CONFIG
    except CommandError as exc:
        print(_error(exc), file=sys.stderr)
        return EX_USAGE
    except EdgeError as exc:
        print(_error(exc), file=sys.stderr)
        return EX_SOFTWARE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
