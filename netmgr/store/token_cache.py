"""Tenant tokens found by their secret, remembered by one replica for a short time.

Every API call authenticates, and looking the token up was a read
transaction of its own on each call (a round trip to PostgreSQL). A token
found is trusted for ``TOKEN_CACHE_SECONDS`` on the replica that found it:

* a token deleted (or its tenant deleted) through this replica is forgotten
  at once: refused by the next call;
* through another replica, or changed in the database behind netmgr's back,
  it is refused here at most ``TOKEN_CACHE_SECONDS`` later (docs/replicas.md);
* an expiry is checked on every call against the token's own ``expires_at``
  (``netmgr.api.auth.authenticate``), so an expired token is refused on time;
* a secret not found is never remembered: a token created through another
  replica works here at once, and random secrets fill nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from netmgr.model.core import Token

TOKEN_CACHE_SECONDS = 2.0
# Bounds the memory of a replica; past it, the oldest half is dropped.
TOKEN_CACHE_MAX = 10_000


class TokenCache:
    """Tokens by the SHA-256 of their secret, each for ``ttl`` seconds of ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 ttl: float = TOKEN_CACHE_SECONDS, max_entries: int = TOKEN_CACHE_MAX) -> None:
        self.clock = clock  # replaceable: tests move it on instead of sleeping
        self._ttl = ttl
        self._max = max_entries
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, Token]] = {}
        # Token and tenant IDs deleted through this replica, and when: a
        # lookup that began before such a delete must not bring its token back.
        self._gone: dict[str, float] = {}

    def get(self, digest: str) -> Token | None:
        """The token remembered for ``digest``, if found less than ``ttl`` ago."""
        with self._lock:
            found = self._tokens.get(digest)
            if found is None:
                return None
            age = self.clock() - found[0]
            if 0 <= age < self._ttl:
                return found[1]
            del self._tokens[digest]
            return None

    def put(self, digest: str, token: Token, looked_up_at: float) -> None:
        """Remember ``token``, as read at ``looked_up_at`` (this cache's clock,
        taken before the read: a delete committed meanwhile forgets it)."""
        with self._lock:
            if self._forgotten_since(token, looked_up_at):
                return
            if len(self._tokens) >= self._max:
                oldest = sorted(self._tokens, key=lambda d: self._tokens[d][0])
                for d in oldest[: self._max // 2]:
                    del self._tokens[d]
            self._tokens[digest] = (looked_up_at, token)

    def _forgotten_since(self, token: Token, at: float) -> bool:
        return any(when >= at for when in (self._gone.get(token.id, -1.0),
                                           self._gone.get(token.tenant_id, -1.0)))

    def forget(self, *, token_id: str = "", tenant_id: str = "") -> None:
        """A token (or every token of a tenant) deleted through this replica."""
        with self._lock:
            now = self.clock()
            gone = self._gone
            # Only deletes younger than a lookup can matter; older ones go.
            for key in [k for k, when in gone.items() if now - when > self._ttl]:
                del gone[key]
            for key in (token_id, tenant_id):
                if key:
                    gone[key] = now
            self._tokens = {d: (at, t) for d, (at, t) in self._tokens.items()
                            if t.id != token_id and t.tenant_id != tenant_id}
