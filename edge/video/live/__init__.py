"""Live view inside edge-video: WebRTC sessions fed by the cameras' own H.264 (no re-encode).

- feed.py: one capture fans out to every viewer of a camera, each with a bounded queue;
- track.py: a viewer's video track, starting on the ring's latest keyframe (instant start);
- session.py: one peer connection, its tracks, data channel and timeouts;
- hub.py: the sessions of the box, viewer caps, grants, audit reports;
- signalling.py: offers / answers / bye over MQTT from the central station;
- actions.py, onvif.py: tele-actions on the `actions` data channel;
- audio.py, audio_io.py: listen-in and talk-down, and the device threads at the ALSA boundary;
- ice.py: STUN / TURN servers and TURN REST credentials;
- patrol.py: video patrol (a snapshot of every camera).
"""
