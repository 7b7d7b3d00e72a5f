"""Does a VPN connection's tunnel carry a flow? Read from the state the
router last reported for the connection (strongSwan's IKE SA and child SAs,
``netmgr.reconcile.agent_report``).

The router sends a peer's networks through the tunnel only: while the
tunnel is down it drops them rather than send them in clear through source
NAT, established connections included (``router/services/nftables/vpn.py``).
A child SA carries the traffic its traffic selectors cover; a child being
rekeyed still carries it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from netmgr.explain.router_view import IPv4, Tunnel

USABLE_CHILD_STATES = ("INSTALLED", "REKEYING", "REKEYED")


def _covers(selectors: Any, ip: IPv4) -> bool:
    """Is ``ip`` in one of a child SA's traffic selectors ("10.1.0.0/24",
    possibly with a "[proto/port]" suffix)? None given: charon did not
    narrow them."""
    nets = []
    for ts in selectors or ():
        try:
            nets.append(ipaddress.IPv4Network(str(ts).split("[")[0], strict=False))
        except ValueError:
            continue
    return not nets or any(ip in n for n in nets)


def carries(t: Tunnel, local: IPv4, remote: IPv4) -> tuple[bool, str]:
    """(carried, why) for traffic between ``local`` (this side) and ``remote``."""
    cid = t.spec.connection_id
    sa = t.sa_status
    if not sa:
        return False, (f"the router has not reported the tunnel of VPN connection {cid} "
                       "up: traffic to the peer's networks is dropped, never sent in clear")
    ike = str(sa.get("ike_state") or "DOWN")
    when = f", reported {sa['update_time']}" if sa.get("update_time") else ""
    if ike != "ESTABLISHED":
        return False, (f"the tunnel of VPN connection {cid} is down ({ike}{when}): traffic "
                       "to the peer's networks is dropped, never sent in clear")
    for child in sa.get("children") or ():
        if str(child.get("state")) in USABLE_CHILD_STATES and \
                _covers(child.get("local_ts"), local) and _covers(child.get("remote_ts"), remote):
            return True, (f"through the tunnel of VPN connection {cid} (ESTABLISHED{when}, "
                          f"child SA {child.get('name', '')} {child.get('state')}), "
                          "without source NAT")
    return False, (f"the tunnel of VPN connection {cid} is ESTABLISHED{when} but no installed "
                   f"child SA covers {local} <-> {remote}: dropped, never sent in clear")
