"""Guest passwords: generated here, handed to the router's agent, forgotten.

``ResetPortPassword`` generates a password, pushes it to the agent running
the port's router (``RouterMetadata.SetGuestPassword``), which holds it in its
memory for the guest's one fetch from the router's password server, and
returns it to the caller once. netmgr keeps nothing: not in its database, not
in its memory after the call. When the agent cannot take it, the call fails
(nothing was reset) and the caller repeats it.
"""

from __future__ import annotations

import secrets
import string

import grpc
from cloudnet.router.v1 import metadata_pb2 as mpb
from cloudnet.router.v1 import metadata_pb2_grpc as mrpc

from common.grpc_errors import FailedPrecondition, Unavailable
from netmgr.model.core import Router

PASSWORD_LENGTH = 16
PUSH_TIMEOUT = 15.0
# No characters a user misreads (0/O, 1/l/I) and none a shell or a URL quotes.
ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def push_password(channel: grpc.Channel, router: Router, port_id: str, password: str) -> None:
    """Hand ``password`` to the router's agent for ``port_id``'s guest."""
    stub = mrpc.RouterMetadataStub(channel)
    try:
        stub.SetGuestPassword(mpb.SetGuestPasswordRequest(
            router_id=router.id, port_id=port_id, password=password), timeout=PUSH_TIMEOUT)
    except grpc.RpcError as e:
        code = e.code() if callable(getattr(e, "code", None)) else None
        if code == grpc.StatusCode.NOT_FOUND:
            # The router has not applied the port yet (or holds no metadata).
            raise FailedPrecondition(f"port {port_id}: its router does not serve it yet; "
                                     "retry when the port is ACTIVE") from None
        raise Unavailable(f"router {router.id}: its agent did not take the password "
                          f"({code.name if code else 'error'}); nothing was reset") from None



