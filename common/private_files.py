"""Files only their owner may read: keys, tokens, databases, configs.

Modes are set explicitly (``os.open`` with the mode, then ``chmod``: the
umask may have trimmed the first, and a file that already exists keeps the
mode it had), so what a daemon writes does not depend on the umask of
whoever started it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700


def ensure_private_dir(path: str | os.PathLike[str], mode: int = DIR_MODE) -> None:
    """Create ``path`` (and its parents) if missing, with ``mode``. An
    existing one loses group and other read and write (nobody else lists
    it), and keeps their search bit if it had it: it may hold what another
    user must reach (the all-in-one's state directory holds the agent's,
    whose dnsmasq reads its host files as user dnsmasq)."""
    os.makedirs(path, mode=mode, exist_ok=True)
    current = stat.S_IMODE(os.stat(path).st_mode)
    if current & 0o066:
        os.chmod(path, current & ~0o066)


def restrict(path: str | os.PathLike[str], mode: int = FILE_MODE) -> None:
    """Give an existing file ``mode`` (nothing if it does not exist)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(os.stat(path).st_mode) != mode:
            os.chmod(path, mode)


def create_private(path: str | os.PathLike[str]) -> None:
    """Make sure ``path`` exists and is 0600 (created empty if missing), so
    that what opens it next (SQLite) never creates it with the umask's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a new 0600 file replacing ``path`` (temp + rename)."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_or_create_key(path: str | os.PathLike[str], size: int = 32) -> bytes:
    """The random key in ``path`` (raw bytes), made on first use: the file is
    0600 in a 0700 directory (created if missing). A key file someone made
    readable to others is tightened again (and said so)."""
    path = os.fspath(path)
    ensure_private_dir(os.path.dirname(path) or ".")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return _existing_key(path, size)
    key = secrets.token_bytes(size)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), FILE_MODE)
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key


def _existing_key(path: str, size: int) -> bytes:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode != FILE_MODE:
        log.warning("%s was mode %o: now 0600", path, mode)
        os.chmod(path, FILE_MODE)
    with open(path, "rb") as f:
        key = f.read()
    if len(key) != size:
        raise ValueError(f"{path}: a key of {len(key)} bytes, expected {size}")
    return key
