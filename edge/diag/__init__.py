"""Level-1 diagnostics: small checks that say what is wrong, how bad, and what to do.

A check is a function of the box's :class:`~edge.diag.sources.Sources` returning findings
(:class:`~edge.diag.model.Finding`): ``ok / warn / fail / unknown``, one line in words, the
figures behind it, and the remedy a level-1 maintainer can apply. A :class:`HoldOff` turns a
raw finding into a reported one only once it has lasted its check's hold-off, so a blip is not
a fault. `edge diag` runs them on the spot; edge-alarm runs them periodically, journals the
faults that matter to the station, refuses arming on arming-relevant failures, and publishes
the report when a finding changes state.
"""
