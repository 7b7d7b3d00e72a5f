"""What every netmgr request is checked for before its servicer runs
(``common.request_checks``): strings of at most ``MAX_STRING`` characters,
IDs in their one form (canonical lower-case UUIDs), finite floats. Each
field's own rules (``netmgr.model``) come after, in the store."""

from __future__ import annotations

from common.request_checks import MAX_STRING, RequestRules, uuid_problem
from netmgr.model.metadata import MAX_KEY_LINE, MAX_USER_DATA

API_PREFIX = "/cloudnet.netmgr.v1."
RULES = RequestRules(max_string=MAX_STRING, id_rule=uuid_problem,
                     # A port's device_id is the caller's free text (a VM's ID, "router:1").
                     not_ids=frozenset({"device_id"}),
                     # What the guest gets at boot, and an OpenSSH key (RSA 16384: ~2.8 kB).
                     long_strings={"user_data": MAX_USER_DATA, "public_key": MAX_KEY_LINE})


def rules_for(method: str) -> RequestRules | None:
    """netmgr's own services; health and reflection keep grpc's checks."""
    return RULES if method.startswith(API_PREFIX) else None
