"""Passwords `edge web passwd` refuses: short, common, or made of the user name or site id.

The web page is on the LAN and guessing is slowed, not stopped; a password from the top of
every guessing list falls in the first minutes whatever the limits. The check is offline and
bounded: a built-in list of the words and sequences at the top of the common-password lists
(English and French, since the boxes are installed in France), compared after undoing the
usual disguises (case, digits or symbols around a word, l33t letters, repetition).
"""

from __future__ import annotations

import re

MIN_LENGTH = 10
MAX_LENGTH = 256
MIN_DISTINCT = 5  # different characters

# The words and sequences at the top of public common-password lists, written out by hand
# (lowercase, no digits or symbols around them: those are stripped before comparing).
_COMMON_TEXT = """
    password passw0rd passwort motdepasse secret letmein welcome welcome1 admin administrator
    root toor user guest login master changeme default qwerty qwertyuiop qwertz azerty
    azertyuiop asdfgh asdfghjkl zxcvbn zxcvbnm wxcvbn iloveyou jetaime loveme monkey dragon
    football baseball soccer hockey sunshine shadow superman batman starwars pokemon princess
    trustno princesse soleil bonjour doudou chouchou loulou nicolas camille marseille paris
    france abc abcdef abcdefgh abcdefghij azertyui qwerty123 access hello hellohello
    whatever freedom flower summer winter autumn spring michael jennifer jordan charlie
    thomas daniel matrix ninja mustang cheese computer internet samsung apple google
    facebook linux ubuntu debian raspberry raspberrypi pi camera camera1 video surveillance
    security alarm alarme installer installateur edge edgebox siteedge demo test testing
    tester service support system manager operator
"""
COMMON = frozenset(_COMMON_TEXT.split())
SEQUENCES = ("0123456789", "9876543210", "abcdefghijklmnopqrstuvwxyz", "qwertyuiop", "azertyuiop")
_LEET = str.maketrans("013457@$", "oieastas")  # l33t letters back to plain ones


def password_problem(password: str, *, user: str = "", site_id: str = "") -> str | None:
    """Why ``password`` may not be used, as a sentence with what to do instead; or None."""
    if len(password) < MIN_LENGTH:
        return (
            f"password too short ({len(password)} characters): use at least {MIN_LENGTH}, "
            "e.g. four unrelated words"
        )
    if len(password) > MAX_LENGTH:
        return f"password too long: use at most {MAX_LENGTH} characters"
    if "\n" in password or "\r" in password:
        return "a password cannot contain a line break"
    if len(set(password)) < MIN_DISTINCT:
        return f"password too repetitive: use at least {MIN_DISTINCT} different characters"
    lowered = password.lower()
    for name, what in ((user, "the user name"), (site_id, "the site id")):
        if len(name) >= 3 and (name.lower() in lowered or name.lower() in lowered.translate(_LEET)):
            return f"password contains {what} ({name}): choose one unrelated to it"
    if _common(lowered):
        return "password too common (it is near the top of every guessing list): choose another"
    return None


def _common(lowered: str) -> bool:
    """A common word or keyboard sequence, possibly repeated, l33t-spelt or padded."""
    plain = re.sub(r"[^a-z0-9]", "", lowered)
    if plain.isdigit() or any(plain and plain in seq for seq in SEQUENCES):
        return True
    core = re.sub(r"^[^a-z]+|[^a-z]+$", "", lowered)  # digits and symbols around the word
    if not core:
        return True
    return any(c in COMMON or _repeated(c) in COMMON for c in (core, core.translate(_LEET)))


def _repeated(text: str) -> str:
    """``abcabc`` → ``abc``: a word said twice is the word."""
    for size in range(1, len(text) // 2 + 1):
        if len(text) % size == 0 and text[:size] * (len(text) // size) == text:
            return text[:size]
    return text
