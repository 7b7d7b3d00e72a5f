"""The services of a router, in apply order; they are removed in the reverse order.

Links and addresses come first: the nftables table and dnsmasq refer to
them. A new service is a class implementing ``base.Service`` (its own
module beside these) added to this tuple.
"""

from __future__ import annotations

from router.services.base import HostFeatures, Service
from router.services.bgp import Bgp
from router.services.conntrackd import Conntrackd
from router.services.dnsmasq import Dnsmasq
from router.services.haproxy import Haproxy
from router.services.interfaces import Interfaces
from router.services.ipv6 import Ipv6
from router.services.keepalived import Keepalived
from router.services.metadata import Metadata
from router.services.nftables.service import NftablesService
from router.services.strongswan import Strongswan


def router_services(host: HostFeatures) -> tuple[Service, ...]:
    """A new set of service objects for one router (a service may keep that
    router's state: nftables keeps the table it loaded)."""
    # conntrackd runs before keepalived notifies; both before the services
    # that run on a redundant router's master only (HAProxy, strongSwan).
    return (Interfaces(host), Ipv6(), NftablesService(host), Dnsmasq(), Conntrackd(),
            Keepalived(), Haproxy(), Strongswan(host), Metadata(), Bgp())
