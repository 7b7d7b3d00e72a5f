"""The one way a cloudnet client opens a gRPC channel: to one or several
servers (a comma list of addresses, or a DNS name with several records),
with gRPC's own name resolution and load-balancing policy, a retry policy
for the calls that are safe to repeat, and TLS.

* ``"10.0.0.1:7070,10.0.0.2:7070"`` becomes gRPC's ``ipv4:`` target (IP
  literals only: gRPC resolves no host names in a list); ``"netmgr:7070"``
  becomes ``dns:///netmgr:7070`` (every A record is an address);
  ``unix:`` and targets with a scheme pass as they are.
* ``pick_first`` (the default) uses the first address that answers and
  moves on when it dies; ``round_robin`` spreads calls over every live one.
* Reads (``Get*``, ``List*``, ``WhoAmI``, ``Health/Check`` of the services
  given) are retried by gRPC on UNAVAILABLE, on another address when one is
  down; nothing else is retried (a create that reached a server may have
  happened).
* TLS: the peer's certificate is checked against the CA and for the role
  expected (``common.tls.ROLE_NETMGR``: the target name override), so the
  addresses need not be in the certificate. Unix sockets stay plaintext.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from common.tls import ROLE_NETMGR, TlsFiles, channel_credentials

POLICIES = ("pick_first", "round_robin")
READ_PREFIXES = ("Get", "List", "WhoAmI")
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


class AddressError(ValueError):
    pass


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def grpc_target(addresses: str) -> str:
    """A gRPC target for one address, a comma list of IP addresses, or a
    DNS name (see the module's docstring)."""
    text = addresses.strip()
    if not text:
        raise AddressError("no server address")
    if text.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return text
    parts = [p.strip() for p in text.split(",") if p.strip()]
    hosts = []
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise AddressError(f"{part[:64]!r}: expected HOST:PORT")
        hosts.append(host)
    if len(parts) == 1 and not _is_ip(hosts[0]):
        return f"dns:///{parts[0]}"
    if not all(_is_ip(h) for h in hosts):
        raise AddressError("a list of addresses must be IP addresses (HOST:PORT,...); "
                           "for host names use one DNS name with several records")
    v6 = [":" in h for h in hosts]
    if any(v6) and not all(v6):
        raise AddressError("a list of addresses must be all IPv4 or all IPv6")
    return ("ipv6:" if all(v6) else "ipv4:") + ",".join(parts)


def read_methods(services: Iterable[ServiceDescriptor]) -> list[dict[str, str]]:
    """The retry policy's ``name`` list: each service's read methods."""
    names = [{"service": "grpc.health.v1.Health", "method": "Check"}]
    for svc in services:
        names += [{"service": svc.full_name, "method": m.name} for m in svc.methods
                  if m.name.startswith(READ_PREFIXES) and not m.server_streaming]
    return names


def service_config(policy: str, retry_services: Iterable[ServiceDescriptor]) -> str:
    if policy not in POLICIES:
        raise AddressError(f"load-balancing policy {policy!r}: one of {', '.join(POLICIES)}")
    return json.dumps({
        "loadBalancingConfig": [{policy: {}}],
        "methodConfig": [{"name": read_methods(retry_services), "retryPolicy": RETRY_POLICY}],
    })


def make_channel(addresses: str, *, tls: TlsFiles | None, role: str = ROLE_NETMGR,
                 policy: str = "pick_first",
                 retry_services: Iterable[ServiceDescriptor] = (),
                 options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to ``addresses``: TLS with ``tls`` (a unix socket is always
    plaintext), else plaintext (the caller's explicit ``--insecure``)."""
    target = grpc_target(addresses)
    opts: list[tuple[str, Any]] = [
        ("grpc.service_config", service_config(policy, retry_services)),
        ("grpc.enable_retries", 1),
        *options,
    ]
    if tls is None or target.startswith("unix:"):
        return grpc.insecure_channel(target, options=opts)
    if tls.ca is not None:  # our CA: check the role, not the address
        opts.append(("grpc.ssl_target_name_override", role))
    return grpc.secure_channel(target, channel_credentials(tls), options=opts)
