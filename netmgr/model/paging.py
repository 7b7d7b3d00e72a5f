"""Pagination of List calls: a page size and an opaque page token.

Lists are ordered by (create time, id), which never changes for an object,
so a page token (the position after the last item shown) stays valid while
objects are added or removed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
from typing import Generic, TypeVar

from common.grpc_errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    """Position after an item: its naive-UTC create time and id."""

    created_at: dt.datetime
    id: str


@dataclasses.dataclass(frozen=True, slots=True)
class PageRequest:
    size: int = DEFAULT_PAGE_SIZE
    after: Cursor | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_page_token: str = ""


def page_request(page_size: int, page_token: str) -> PageRequest:
    """From the request's fields: 0 means the default, too big is clamped."""
    if page_size < 0:
        raise InvalidArgument.one("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    return PageRequest(size=size, after=decode_token(page_token) if page_token else None)


def encode_token(created_at: dt.datetime, id_: str) -> str:
    if created_at.tzinfo is not None:
        created_at = created_at.astimezone(dt.UTC).replace(tzinfo=None)
    raw = json.dumps([created_at.isoformat(timespec="microseconds"), id_]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        when, id_ = json.loads(raw)
        if not isinstance(id_, str) or not isinstance(when, str):
            raise ValueError("bad token shape")
        return Cursor(dt.datetime.fromisoformat(when), id_)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as e:
        raise InvalidArgument.one("page_token", "not a page token from a previous call") from e
