"""Victim of the SIGKILL durability test: appends events and prints each seq once committed.

Usage: python journal_writer.py JOURNAL_PATH [MAX_EVENTS]. It stops by itself after MAX_EVENTS
(default 100000) so a test that fails to kill it cannot leave it running forever.
"""

from __future__ import annotations

import sys

from edge.events import Event, Kind
from edge.journal import Journal


def main(argv: list[str]) -> int:
    journal = Journal(argv[1])
    limit = int(argv[2]) if len(argv) > 2 else 100_000
    for n in range(limit):
        kind = Kind.BURGLARY if n % 2 == 0 else Kind.BURGLARY_RESTORE
        event = journal.append(Event(kind, zone_id=f"z{n % 4}", details={"n": n}))
        print(event.seq, flush=True)  # only after append() returned: the row is committed
    journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
