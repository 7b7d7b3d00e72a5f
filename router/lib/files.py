"""Atomic file writes: a reader (dnsmasq's inotify, an operator) never sees half a file."""

from __future__ import annotations

import contextlib
import os


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """temp + fsync + os.replace + fsync of the directory.

    The temp name starts with a dot: dnsmasq's inotify ignores dotfiles, so it
    never reads a file while it is being written in a watched directory.
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have trimmed it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_if_changed(path: str, text: str, mode: int = 0o644) -> bool:
    """Write `text` unless the file already holds it. Returns True if written."""
    return write_if_changed_bytes(path, text.encode(), mode)


def remove(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def write_if_changed_bytes(path: str, data: bytes, mode: int = 0o644) -> bool:
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    write_atomic(path, data, mode)
    return True
