"""The model -> the router's guest metadata (router/v1/metadata.proto): what
each port's guest is told about itself. The one place a port's metadata
becomes an agent message."""

from __future__ import annotations

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import metadata_pb2 as mpb

from netmgr.model.core import Port, RouterSnapshot
from netmgr.reconcile.configbuild import vpc as configbuild_vpc


def guest_metadata(port: Port, zone: str, public_ip: str,
                   key: tuple[str, str] | None) -> mpb.GuestMetadata:
    name, public_key = key or ("", "")
    return mpb.GuestMetadata(
        port_id=port.id, interface=configbuild_vpc.guest_interface_name(port.network_id),
        mac=port.mac, ip=port.ip, hostname=port.hostname, fqdn=port.fqdn,
        public_ip=public_ip, availability_zone=zone, user_data=port.user_data,
        labels=dict(port.labels), ssh_key_name=name, ssh_public_key=public_key,
        network_id=port.network_id, device_id=port.device_id,
        tokens_required=port.metadata_tokens == "required")


def add_metadata(config: pb.RouterConfig, snapshot: RouterSnapshot) -> None:
    config.dns_records.extend(
        mpb.GuestDnsRecord(id=r.id, network_id=r.network_id, vpc_id=r.vpc_id, name=r.name,
                           type=r.type, value=r.value) for r in snapshot.dns_records)
    public = {n.port_id: n.public_ip for n in (snapshot.edge.static_nats if snapshot.edge
                                              else ())}
    config.guest_metadata.extend(
        guest_metadata(p, snapshot.zone.name, public.get(p.id, ""), snapshot.ssh_keys.get(p.id))
        for p in sorted(snapshot.ports, key=lambda p: p.id))
