"""Arming state kept across restarts: a box that reboots while armed comes back armed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge.fsutil import atomic_write

log = logging.getLogger(__name__)


class PanelStateFile:
    """Partition arming modes in a small JSON file, replaced atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("arming state %s unreadable (%s): starting disarmed", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, state: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(state, sort_keys=True).encode("utf-8"))
