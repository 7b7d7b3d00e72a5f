"""IMDSv2 session tokens of one router's guests, in the agent's memory.

``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds``
(1 to 21600) mints a token bound to the guest's address (the one nftables
checked) for that many seconds; a guest whose port requires tokens must send
one (``X-aws-ec2-metadata-token``) with every request, checked by nginx's
``auth_request`` against this table. Tokens are random (256 bits), never
written anywhere: an agent restart voids them and guests ask again, as they
do when a token expires.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable

MAX_TTL = 21600
MAX_PER_GUEST = 64  # live tokens a guest may hold; the oldest goes first


def parse_ttl(value: str) -> int | None:
    """The TTL header's seconds, or None when it is missing or out of range."""
    value = value.strip()
    if not value.isdigit() or len(value) > 6:
        return None
    ttl = int(value)
    return ttl if 1 <= ttl <= MAX_TTL else None


class GuestTokens:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (guest IP, expiry)

    def mint(self, guest_ip: str, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            for t in [t for t, (_, exp) in self._tokens.items() if exp <= now]:
                del self._tokens[t]
            mine = [t for t, (ip, _) in self._tokens.items() if ip == guest_ip]
            for t in mine[:max(0, len(mine) - MAX_PER_GUEST + 1)]:  # oldest first (dict order)
                del self._tokens[t]
            self._tokens[token] = (guest_ip, now + ttl)
        return token

    def valid(self, guest_ip: str, token: str) -> bool:
        with self._lock:
            held = self._tokens.get(token.strip())
        return held is not None and held[0] == guest_ip and held[1] > self._clock()

    def guests(self, ips: Iterable[str]) -> None:
        """Tokens of addresses no guest holds any more are dropped."""
        keep = set(ips)
        with self._lock:
            for t in [t for t, (ip, _) in self._tokens.items() if ip not in keep]:
                del self._tokens[t]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()
