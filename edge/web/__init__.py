"""The box's local web server: the installer's live-view page (WHEP) on the LAN.

- credentials.py: the per-box user file (`edge web passwd USER`), scrypt hashes;
  passwords.py: which passwords are refused; files.py: root reading the service's files;
- server.py: the aiohttp server (page, /api/site, WHEP) and Basic auth; answers.py: refusal
  bodies, status codes, security headers, the page's files;
- connections.py: connection caps and read deadlines under TLS and HTTP;
- guard.py: failed-login limits per address, per user name and in total;
- refusals.py: refused logins summarised for the journal;
- tls.py: HTTPS, the box's own certificate and its fingerprint (`edge web cert`);
- static/: the page itself (plain HTML, CSS and JavaScript, no build step).

Nothing is imported here, so that `edge web passwd` never loads aiohttp.
"""
