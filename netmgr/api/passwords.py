"""Guest passwords waiting for their guest: in this process's memory only.

``ResetPortPassword`` generates one, returns it to the caller once and keeps
it here until the guest has fetched it from its router's password server (or
the port goes). Never written to the database: a netmgr restart forgets a
password its guest has not fetched yet, and the caller resets it again.
"""

from __future__ import annotations

import secrets
import string
import threading

PASSWORD_LENGTH = 16
# No characters a user misreads (0/O, 1/l/I) and none a shell or a URL quotes.
ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


class PendingPasswords:
    """port ID -> the password its guest has not fetched yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}

    def reset(self, port_id: str) -> str:
        password = generate_password()
        with self._lock:
            self._pending[port_id] = password
        return password

    def pending(self, port_ids: set[str] | frozenset[str]) -> dict[str, str]:
        """The pending passwords of these ports."""
        with self._lock:
            return {p: pw for p, pw in self._pending.items() if p in port_ids}

    def fetched(self, port_id: str, password: str) -> None:
        """The guest has it: forget it (only if it is still the pending one)."""
        with self._lock:
            if self._pending.get(port_id) == password:
                del self._pending[port_id]

    def forget(self, port_id: str) -> None:
        with self._lock:
            self._pending.pop(port_id, None)
