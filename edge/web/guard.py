"""Who may try a password now: limits on failed logins per address, per user and in total.

scrypt makes each guess cost; these limits make guessing slow whatever the guesser does:

* per address: more than ``per_address`` failures within a minute from one client address
  (an IPv6 client is keyed by its /64, which a LAN host can fill with addresses) and that
  address waits for the rest of the minute, even with the right password, so a guesser
  cannot tell when it found one;
* in total: more than ``total`` failures within a minute from all addresses together (the
  checks under way count as failures until they end, so concurrency buys nothing) and
  every address that has not logged in successfully before waits too. This stops a guesser
  who rotates addresses (a LAN host can use any number of them), while an installer who
  logged in before keeps working from the address it used;
* per user name: from the ``USER_FREE``-th failure within ``USER_WINDOW_S`` a name waits
  2, 4, 8 … s (at most ``user_backoff_max_s``) after its last failure, except from an
  address that logged in before. Unknown names are tracked like real ones, so the answers do
  not tell which user names exist.

Every table is bounded. The address table never forgets an address that is waiting to make
room for a new one: it forgets addresses that are not waiting, oldest failure first, and when
every remembered address is waiting, a new address is not remembered at all (the total budget,
long exhausted by then, still holds it back).
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import math
import time
from collections.abc import Callable

WINDOW_S = 60.0  # failed logins are counted over this window
MAX_ADDRESSES = 1024  # client addresses whose failures are remembered
MAX_USERS = 256  # user names whose failures are remembered
MAX_TRUSTED = 64  # addresses remembered as having logged in
TRUSTED_S = 24 * 3600.0  # how long a successful login vouches for its address
USER_FREE = 5  # failures of one user name before it backs off
USER_WINDOW_S = 900.0  # failures of one user name are counted over this window


def address_key(remote: str) -> str:
    """The key of a client address: IPv4 as is, IPv6 by its /64 (IPv4-mapped as IPv4)."""
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


@dataclasses.dataclass(frozen=True)
class Wait:
    """A login that must wait: ``seconds`` (whole, at least 1) and a sentence saying why."""

    seconds: int
    reason: str


class LoginGuard:
    """Failed logins per address, per user name and in total; see the module docstring."""

    def __init__(
        self,
        per_address: int,
        total: int,
        *,
        user_backoff_max_s: float = 900.0,
        window: float = WINDOW_S,
        max_addresses: int = MAX_ADDRESSES,
        max_users: int = MAX_USERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address, self.total, self.window, self.clock = per_address, total, window, clock
        self.user_backoff_max_s = user_backoff_max_s
        self.max_addresses, self.max_users = max_addresses, max_users
        self._addresses: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._all: collections.deque[float] = collections.deque(maxlen=total + 1)
        self._users: collections.OrderedDict[str, tuple[collections.deque[float], bool]] = (
            collections.OrderedDict()
        )
        self._trusted: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.untracked = 0  # failures from addresses the full table could not remember
        self.in_flight = 0  # checks under way: each may be a failure, so each counts

    # -- questions -------------------------------------------------------------------------
    def wait(self, remote: str, user: str | None) -> Wait | None:
        """Why ``remote`` may not try ``user``'s password now, or None when it may."""
        now = self.clock()
        key = address_key(remote)
        address = self._address_wait(key, now)
        if address > 0:
            return _wait(address, f"too many failed logins from {remote}")
        if self._is_trusted(key, now):
            return None
        if user is not None:
            backoff = self._user_wait(user, now)
            if backoff > 0:
                return _wait(backoff, f"too many failed logins as {user!r}")
        overall = self._total_wait(now)
        if overall > 0:
            return _wait(
                overall,
                "too many failed logins on this box from the network; an address that "
                "logged in before is not held back",
            )
        return None

    def trusted(self, remote: str) -> bool:
        """Whether ``remote`` logged in successfully within TRUSTED_S."""
        return self._is_trusted(address_key(remote), self.clock())

    def trusted_key(self, key: str) -> bool:
        """:meth:`trusted` for an address already reduced by :func:`address_key`."""
        return self._is_trusted(key, self.clock())

    def locked(self, remote: str) -> bool:
        """Whether ``remote`` itself is waiting (more than per_address failures)."""
        return self._address_wait(address_key(remote), self.clock()) > 0

    # -- what happened ----------------------------------------------------------------------
    def failed(self, remote: str, user: str | None, *, known_user: bool = False) -> None:
        """A password check failed; ``known_user``: the name exists (never forgotten first)."""
        now = self.clock()
        self._all.append(now)
        self._fail_address(address_key(remote), now)
        if user is not None:
            self._fail_user(user[:64], known_user, now)

    def succeeded(self, remote: str) -> None:
        """A login succeeded: the address is trusted past the total and user limits."""
        key = address_key(remote)
        self._trusted.pop(key, None)
        self._trusted[key] = self.clock()
        while len(self._trusted) > MAX_TRUSTED:
            self._trusted.popitem(last=False)

    def __len__(self) -> int:
        return len(self._addresses)

    # -- per address ------------------------------------------------------------------------
    def _address_wait(self, key: str, now: float) -> float:
        times = self._addresses.get(key)
        if times is None:
            return 0.0
        _expire(times, now - self.window)
        if len(times) > self.per_address:
            return times[0] + self.window - now
        return 0.0

    def _fail_address(self, key: str, now: float) -> None:
        times = self._addresses.pop(key, None)
        if times is None:
            if len(self._addresses) >= self.max_addresses and not self._make_room(now):
                self.untracked += 1
                return
            times = collections.deque(maxlen=self.per_address + 1)
        times.append(now)
        self._addresses[key] = times  # most recent failure last

    def _make_room(self, now: float) -> bool:
        """Forget the address that failed least recently among those not waiting."""
        for key in self._addresses:
            if self._address_wait(key, now) <= 0:
                del self._addresses[key]
                return True
        return False

    # -- per user name ----------------------------------------------------------------------
    def _user_wait(self, user: str, now: float) -> float:
        entry = self._users.get(user[:64])
        if entry is None:
            return 0.0
        times, _ = entry
        _expire(times, now - USER_WINDOW_S)
        if len(times) < USER_FREE:
            return 0.0
        backoff = min(2.0 ** (len(times) - USER_FREE + 1), self.user_backoff_max_s)
        return times[-1] + backoff - now

    def _fail_user(self, user: str, known: bool, now: float) -> None:
        times, was_known = self._users.pop(user, (collections.deque(maxlen=64), known))
        times.append(now)
        self._users[user] = (times, known or was_known)
        if len(self._users) > self.max_users:
            for name, (_, real) in self._users.items():
                if not real:
                    del self._users[name]
                    break

    # -- in total ---------------------------------------------------------------------------
    def _total_wait(self, now: float) -> float:
        _expire(self._all, now - self.window)
        if len(self._all) + self.in_flight > self.total:
            return self._all[0] + self.window - now if self._all else 1.0
        return 0.0

    def _is_trusted(self, key: str, now: float) -> bool:
        since = self._trusted.get(key)
        return since is not None and now - since < TRUSTED_S


def _expire(times: collections.deque[float], before: float) -> None:
    while times and times[0] <= before:
        times.popleft()


def _wait(seconds: float, why: str) -> Wait:
    whole = max(1, math.ceil(seconds))
    return Wait(whole, f"{why}: wait {whole} s")
