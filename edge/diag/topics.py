"""The box-bus topics of diagnostics and remediation (the broker's ACL names who may use them).

- ``edge/diag/report`` (retained): edge-alarm's latest diagnostics report; local users and
  edge-video (web server, /metrics) read it.
- ``edge/remedy/video``: edge-alarm asks edge-video to restart or to reconnect a camera, on
  behalf of a signed central command; edge-video answers on ``edge/remedy/reply/<token>``.
  edge-alarm may not signal another user's process: edge-video exits cleanly and systemd
  (Restart=always) starts it again.
"""

REPORT = "edge/diag/report"
VIDEO_REQUEST = "edge/remedy/video"
VIDEO_REPLY = "edge/remedy/reply"
