"""A redundant router's two instances: the config of each, from the router's
one config (``build_router_config``) and its ``Redundancy``.

Both instances hold the same interfaces, addresses, networks, rules and
hosts (both serve DHCP from the same static hosts: the model is authoritative,
nothing is synced); they differ in

* their MACs: instance 0 keeps the router's (a router made redundant keeps
  what guests and switches learnt), instance 1's are derived from them with
  another locally administered first octet (netmgr allocates only 02:...);
* their sync link's address (169.254.0.1 and .2 on the router's sync VLAN);
* their VRRP priority: the preferred instance's is the higher.
"""

from __future__ import annotations

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import redundancy_pb2 as rpb

from netmgr.model.redundancy import Redundancy

SYNC_INTERFACE = "sync0"
# First octet of a derived MAC: locally administered, unicast, never 02
# (netmgr's own), one per use.
_INSTANCE_1_OCTET = 0x06
_SYNC_OCTETS = (0x0A, 0x0E)


def _with_octet(mac: str, octet: int) -> str:
    return f"{octet:02x}{mac[2:]}"


# VRRP adverts of a redundant router whose instances are router VMs: under
# TCG on a busy host a VM's keepalived was seen flapping MASTER / BACKUP
# with the default 200 ms (three adverts missed in 0.6 s of starvation);
# 500 ms tolerates 1.5 s for a takeover in about 1.8 s.
VM_ADVERT_MS = 500


def instance_config(config: pb.RouterConfig, red: Redundancy, instance: int,
                    advert_ms: int = 0) -> pb.RouterConfig:
    out = pb.RouterConfig()
    out.CopyFrom(config)
    if instance == 1:
        for iface in out.interfaces:
            iface.mac = _with_octet(iface.mac.lower(), _INSTANCE_1_OCTET)
    base_mac = next((i.mac for i in config.interfaces), "02:00:00:00:00:00")
    out.interfaces.append(pb.Interface(
        name=SYNC_INTERFACE, role=pb.INTERFACE_ROLE_SYNC,
        mac=_with_octet(base_mac.lower(), _SYNC_OCTETS[instance]),
        addresses=[f"169.254.0.{instance + 1}/30"], segment_id=red.sync_vlan))
    out.redundancy.CopyFrom(rpb.Redundancy(
        virtual_router_id=red.virtual_router_id, priority=red.priority(instance),
        role_hint="master" if instance == red.preferred else "backup",
        sync_interface=SYNC_INTERFACE, peer_address=f"169.254.0.{2 - instance}",
        instance=instance, advert_interval_ms=advert_ms))
    return out
