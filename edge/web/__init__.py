"""The box's local web server: the installer's live-view page (WHEP) on the LAN.

- credentials.py: the per-box user file (`edge web passwd USER`), scrypt hashes;
- server.py: the aiohttp server (page, /api/site, WHEP), Basic auth and login throttling;
- static/: the page itself (plain HTML, CSS and JavaScript, no build step).

Nothing is imported here, so that `edge web passwd` never loads aiohttp.
"""
