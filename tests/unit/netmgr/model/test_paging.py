"""Page sizes and page tokens."""

from __future__ import annotations

import datetime as dt

import pytest

from common.grpc_errors import InvalidArgument
from netmgr.model.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Cursor,
    decode_token,
    encode_token,
    page_request,
)


@pytest.mark.parametrize(("asked", "got"), [
    (0, DEFAULT_PAGE_SIZE), (1, 1), (50, 50), (500, 500), (501, MAX_PAGE_SIZE),
    (10**9, MAX_PAGE_SIZE),
])
def test_page_sizes(asked: int, got: int) -> None:
    assert page_request(asked, "").size == got


def test_tokens_round_trip_and_are_opaque() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 6789, tzinfo=dt.UTC)
    token = encode_token(when, "abc")
    assert "abc" not in token
    assert "=" not in token
    assert decode_token(token) == Cursor(when.replace(tzinfo=None), "abc")
    assert page_request(0, token).after == Cursor(when.replace(tzinfo=None), "abc")


@pytest.mark.parametrize("token", ["x", "!!!!", "e30", "WzEsMl0", "WyJub3QgYSBkYXRlIiwgIngiXQ"])
def test_bad_tokens(token: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        page_request(10, token)
    assert [v.field for v in exc.value.violations] == ["page_token"]


def test_negative_page_size() -> None:
    with pytest.raises(InvalidArgument):
        page_request(-1, "")
