"""Reading a web secret file as root when it already belongs to the service user.

:mod:`edge.secret_files` accepts a file that belongs to root or to the reader. The web users
file and the box's certificate belong to the user of edge-video (it must read them), so root
(`edge web passwd`, `edge web cert`) reads them with that user's effective uid for the time
of the read: the rule stays whole, and a read that works proves the service can read them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from edge.secret_files import read_secret


def read_as_owner(path: Path, what: str, owner: tuple[int, int] | None = None) -> bytes:
    """``read_secret(path, what)``, as ``owner``'s uid when root and the file is theirs."""
    with _as(path, owner):
        return read_secret(path, what)


@contextlib.contextmanager
def _as(path: Path, owner: tuple[int, int] | None) -> Iterator[None]:
    try:
        uid = os.stat(path, follow_symlinks=False).st_uid
    except OSError:
        uid = 0  # read_secret says what is wrong with it
    if owner is None or os.geteuid() != 0 or uid != owner[0] or uid == 0:
        yield
        return
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
