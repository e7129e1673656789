"""What `edge motion FILE` prints: a log in frame-time order, then a summary.

Text: an event's start and end each get a line at their own frame time, with lighting changes
(and, with --verbose, every frame) in between. The detector reports a start a few frames late
(persistence) and an end a second or more late (quiet time), so lines wait in a reorder buffer
until the detector says nothing earlier can come (MotionDetector.horizon_s); the buffer holds
a few seconds of lines and is capped at MAX_PENDING. An event still under way when the file
ends is reported as open ("still under way"), with its extent so far, never as ended: the
recording was cut, the motion was not seen to stop.

JSON (--json): one object per event once it ends (``"open": false``) or at the end of the file
(``"open": true``, ``"end_s": null``), per lighting change and, with --verbose, per frame, in
the same order; then the summary object.
"""

from __future__ import annotations

import heapq
import itertools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.video.motion import MotionDetector, MotionEvent

MAX_PENDING = 10_000  # lines waiting for time order; past this the oldest go out regardless
# Lines at one frame time: the frame itself, then its lighting change, then event starts/ends.
_FRAME, _LIGHTING, _START, _END = range(4)


class MotionReport:
    """Lines in frame-time order (a bounded reorder buffer), then a summary."""

    def __init__(self, as_json: bool, verbose: bool, holdoff_s: float) -> None:
        self.as_json = as_json
        self.verbose = verbose
        self.holdoff_s = holdoff_s
        self.events: list[MotionEvent] = []  # ended, then open at the end of the file
        self.open = 0
        self.lighting_changes = 0
        self.damaged = False
        self._pending: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()

    def _push(self, t_s: float, rank: int, obj: dict[str, Any], text: str) -> None:
        line = json.dumps(obj, ensure_ascii=False) if self.as_json else text
        heapq.heappush(self._pending, (t_s, rank, next(self._seq), line))
        if len(self._pending) > MAX_PENDING:
            print(heapq.heappop(self._pending)[3], flush=True)

    def release(self, horizon_s: float) -> None:
        """Print every line that nothing still to come can precede."""
        while self._pending and self._pending[0][0] <= horizon_s:
            print(heapq.heappop(self._pending)[3])
        sys.stdout.flush()

    def frame(self, index: int, stats: dict[str, Any]) -> None:
        t_s = stats["t_s"]
        if stats["lighting"]:
            self._lighting(index, t_s, stats)
        if not self.verbose:
            return
        cells = stats["cells_changed"]
        state = " [new motion held off]" if stats["holdoff"] else ""
        self._push(
            t_s,
            _FRAME,
            {"type": "frame", **{k: _rounded(v) for k, v in stats.items()}},
            f"{t_s:.1f} s (frame {index}) changed {stats['changed_fraction']:.1%}, "
            f"{stats['residual_fraction']:.1%} after lighting, tone shift "
            f"{stats['tone_shift']:.0f}; cells "
            + ", ".join(f"{zone} {n}" for zone, n in cells.items())
            + state,
        )

    def _lighting(self, index: int, t_s: float, stats: dict[str, Any]) -> None:
        self.lighting_changes += 1
        changed, relearnt = stats["changed_fraction"], stats["relearnt"]
        if relearnt:
            what = (
                f"{stats['residual_fraction']:.0%} of the picture changed in a way no global "
                f"brightness/contrast change explains: background relearnt, new motion held "
                f"off {self.holdoff_s:g} s"
            )
        else:
            what = (
                f"{changed:.0%} of the picture changed, explained by a global brightness/"
                f"contrast change: background adjusted, detection goes on"
            )
        self._push(
            t_s,
            _LIGHTING,
            {
                "type": "lighting",
                "t_s": round(t_s, 3),
                "frame": index,
                "changed_fraction": round(changed, 3),
                "residual_fraction": round(stats["residual_fraction"], 3),
                "relearnt": relearnt,
            },
            f"{t_s:.1f} s (frame {index}) lighting change: {what}",
        )

    def event(self, event: MotionEvent) -> None:
        action = " (alarm)" if event.action == "alarm" else ""
        if event.end_s is None:
            if not self.as_json:  # JSON has the whole event once it ends
                self._push(
                    event.start_s,
                    _START,
                    {},
                    f"{event.start_s:.1f} s (frame {event.start_frame}) zone {event.zone}: "
                    f"motion starts{action}",
                )
            return
        self.events.append(event)
        self._push(
            event.end_s,
            _END,
            {"type": "motion", **_event_dict(event), "open": False},
            f"{event.end_s:.1f} s (frame {event.end_frame}) zone {event.zone}: motion ends"
            f"{action}; {_extent(event)}",
        )

    def still_open(self, event: MotionEvent, last_t: float) -> None:
        self.events.append(event)
        self.open += 1
        action = " (alarm)" if event.action == "alarm" else ""
        self._push(
            last_t,
            _END,
            {"type": "motion", **_event_dict(event), "open": True},
            f"{last_t:.1f} s (end of file) zone {event.zone}: motion still under way{action}, "
            f"open; so far {_extent(event)}",
        )

    def summary(
        self,
        path: Path,
        camera: str,
        shape: tuple[int, int],
        detector: MotionDetector,
        last_t: float,
    ) -> None:
        layout = detector.layout
        frames = detector.last_stats["frame"] + 1
        zones: dict[str, dict[str, Any]] = {
            z.id: {"action": z.action, "cells": int(z.cells.sum()), "events": 0, "open": 0,
                   "motion_s": 0.0}
            for z in layout.zones
        }  # fmt: skip
        for e in self.events:
            zone = zones[e.zone]
            zone["events"] += 1
            zone["open"] += e.end_s is None
            zone["motion_s"] = round(zone["motion_s"] + e.last_s - e.start_s, 3)
        obj = {
            "type": "summary",
            "file": str(path),
            "camera": camera,
            "frames": frames,
            "duration_s": round(last_t, 3),
            "resolution": [shape[1], shape[0]],
            "analysis": [layout.shape[1], layout.shape[0]],
            "stride": layout.stride,
            "events": len(self.events),
            "open_events": self.open,
            "lighting_changes": self.lighting_changes,
            "zones": zones,
        }
        still = f" ({self.open} still open at the end of the file)" if self.open else ""
        lines = [
            f"{path.name}: {frames} frames, {last_t:.1f} s at {shape[1]}x{shape[0]} "
            f"(analysed at {layout.shape[1]}x{layout.shape[0]}, stride {layout.stride}), "
            f"camera {camera}",
            f"{len(self.events)} motion event(s){still}, {self.lighting_changes} lighting "
            f"change(s)",
        ]
        lines += [
            f"  zone {zid} ({z['action']}, {z['cells']} cells): {z['events']} event(s)"
            + (f" ({z['open']} open)" if z["open"] else "")
            + f", {z['motion_s']:.1f} s of motion"
            for zid, z in zones.items()
        ]
        print(json.dumps(obj, ensure_ascii=False) if self.as_json else "\n".join(lines))


def _extent(event: MotionEvent) -> str:
    return (
        f"{event.start_s:.1f} s – {event.last_s:.1f} s (frames {event.start_frame}–"
        f"{event.last_frame}), peak {event.peak_cells} cells"
    )


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def _event_dict(event: MotionEvent) -> dict[str, Any]:
    return {
        "zone": event.zone,
        "action": event.action,
        "start_s": round(event.start_s, 3),
        "end_s": None if event.end_s is None else round(event.end_s, 3),
        "start_frame": event.start_frame,
        "end_frame": event.end_frame,
        "last_s": round(event.last_s, 3),
        "last_frame": event.last_frame,
        "peak_cells": event.peak_cells,
        "cells": [list(c) for c in event.cells],
    }
