"""Client-supplied request IDs on create calls (``netmgr.store.requests``).

A create call may carry gRPC metadata ``x-request-id``: 1 to 64 characters
(letters, digits, ``.``, ``_``, ``:``, ``-``), unique per tenant for a day.
Metadata rather than a field, so every create call of every service takes
it the same way, and a client library can add it to every create and keep
it on its retries without knowing each message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from common.grpc_errors import DomainError, InvalidArgument, quote
from netmgr.store.base import Database
from netmgr.store.requests import Replayed, create_request, recorded

T = TypeVar("T")

METADATA_KEY = "x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(context: Any) -> str:
    """The call's request ID ("" when it has none); INVALID_ARGUMENT naming it if malformed."""
    values = [v for k, v in (context.invocation_metadata() or ()) if k == METADATA_KEY]
    if not values:
        return ""
    value = values[-1]
    if not isinstance(value, str) or not _VALID.fullmatch(value) or len(values) > 1:
        raise InvalidArgument.one(
            METADATA_KEY, "one value of 1 to 64 letters, digits, '.', '_', ':' or '-', got "
            f"{quote(str(value))}" + (f" ({len(values)} values)" if len(values) > 1 else ""))
    return value


def once(context: Any, db: Database, tenant_id: str, method: str, create: Callable[[], T],
         get: Callable[[str], T]) -> tuple[T, bool]:
    """``create()``, or, when this request ID already created an object,
    ``get(its id)``. Returns (object, created now)."""
    rid = request_id(context)
    if not rid:
        return create(), True
    with create_request(tenant_id, rid, method):
        try:
            return create(), True
        except Replayed as r:
            return get(r.object_id), False
        except DomainError:
            # A retry racing the first try may be refused by its own checks
            # (the first one's object now conflicts with it): answer as the
            # first one did if it committed.
            object_id = db.read(lambda s: recorded(s, tenant_id, rid, method))
            if object_id is None:
                raise
            return get(object_id), False
