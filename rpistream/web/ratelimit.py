"""Per-client-address rate limit on new WHEP sessions: a token bucket per address.

A WHEP offer is the most expensive request the server answers: a peer
connection, a DTLS certificate, ICE gathering. The viewer limits
(`limits.max_viewers`) bound how many sessions exist at once; this bounds how
fast one client can make (and abandon) them.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

# Addresses remembered at once. An address untouched for burst / rate seconds
# (10 s at the defaults) has a full bucket again, which is what a forgotten
# address gets: so forgetting only matters when more than this many addresses
# make offers within those seconds, far past any real audience of one Pi
# (limits.max_viewers is at most 1000). Each entry is about 250 bytes: at most
# ~1 MiB, however many addresses an attacker cycles through.
MAX_ADDRESSES = 4096


def client_key(remote: str | None) -> str:
    """What is limited: an IPv4 address, or an IPv6 /64. One host (one home
    router's LAN, one phone) is routinely handed a whole /64, so per-address
    IPv6 buckets would give a single client 2^64 of them. Behind a reverse
    proxy every client shares the proxy's address (X-Forwarded-For is not
    trusted: any client can write it)."""
    if remote is None:  # a Unix socket
        return "local"
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d on a dual-stack socket
        return str(address.ipv4_mapped)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


class OfferRateLimit:
    """`burst` offers at once per client, then `per_minute` offers a minute,
    remembering at most `max_addresses` clients (least recently seen forgotten)."""

    def __init__(self, burst: int, per_minute: int, *, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic):
        self.burst = burst
        self.rate = per_minute / 60.0  # tokens per second
        self.max_addresses = max_addresses
        self._clock = clock
        # key -> (tokens, time of that count); oldest first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, remote: str | None) -> float:
        """Spend one offer for `remote`: 0 if allowed, else the seconds until it would be."""
        key = client_key(remote)
        now = self._clock()
        tokens, then = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # re-inserted last: most recently seen
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
        return wait

    def describe(self) -> str:
        per = f"{self.rate:g} a second" if self.rate >= 1 else f"1 every {1 / self.rate:g} s"
        return f"at most {self.burst} at once, then {per}"


def retry_after(wait: float) -> str:
    """Retry-After (RFC 9110 §10.2.3) is whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(wait)))
