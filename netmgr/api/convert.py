"""Protobuf messages <-> model objects and validation inputs (the only place).

Output-only fields of a request message (ids, allocated values, state) are
ignored, as resource-oriented APIs do. Update requests resolve their field
mask here: the paths that may change, or, for an empty mask, every
updatable field the message sets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cloudnet.netmgr.v1 import hosts_pb2 as hpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from cloudnet.netmgr.v1 import routing_pb2 as rpb
from cloudnet.netmgr.v1 import security_group_pb2 as sgpb
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from common.dhcp_options import NAME_OF, DhcpOption
from netmgr.model import core as model
from netmgr.model.hosts import Host, HostSpec
from netmgr.model.metadata import RawDhcpOption
from netmgr.model.validation import (
    NETWORK_UPDATABLE,
    PORT_UPDATABLE,
    ZONE_UPDATABLE,
    NetworkSpec,
    NetworkUpdate,
    PortSpec,
    PortUpdate,
    resolve_update_mask,
)
from netmgr.store.router_vms import RouterVm

ROUTER_STATES = {
    model.RouterState.PROVISIONING: pb.ROUTER_STATE_PROVISIONING,
    model.RouterState.ACTIVE: pb.ROUTER_STATE_ACTIVE,
    model.RouterState.DEGRADED: pb.ROUTER_STATE_DEGRADED,
    model.RouterState.UNREACHABLE: pb.ROUTER_STATE_UNREACHABLE,
}
ROUTER_VM_STATES = {
    "deploying": pb.ROUTER_VM_STATE_DEPLOYING,
    "booting": pb.ROUTER_VM_STATE_BOOTING,
    "active": pb.ROUTER_VM_STATE_ACTIVE,
    "replacing": pb.ROUTER_VM_STATE_REPLACING,
    "failed": pb.ROUTER_VM_STATE_FAILED,
}
OBJECT_STATES = {
    model.ObjectState.PENDING: pb.OBJECT_STATE_PENDING,
    model.ObjectState.ACTIVE: pb.OBJECT_STATE_ACTIVE,
    model.ObjectState.ERROR: pb.OBJECT_STATE_ERROR,
}


def _ts(when: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def status_fields(status: model.Status, message: type[Message]) -> dict[str, Any]:
    """The status envelope as output fields of ``message``: each stateful
    message carries its part of it (all have id, state, error and
    create_time; some tenant_id, generation, applied_generation)."""
    fields = message.DESCRIPTOR.fields_by_name
    values: dict[str, Any] = {
        "id": status.id, "tenant_id": status.tenant_id, "generation": status.generation,
        "state": OBJECT_STATES[status.state], "error": status.error,
        "applied_generation": status.applied_generation,
        "create_time": _ts(status.created_at) if status.created_at is not None else None,
    }
    return {name: value for name, value in values.items() if name in fields}


def _present(msg: Message) -> set[str]:
    """Names of the fields a proto3 message sets (non-default values)."""
    return {field.name for field, _ in msg.ListFields()}


# ---------------------------------------------------------------- outputs


def tenant_to_pb(t: model.Tenant) -> pb.Tenant:
    return pb.Tenant(id=t.id, name=t.name, create_time=_ts(t.created_at))


def token_to_pb(t: model.Token) -> pb.Token:
    out = pb.Token(id=t.id, tenant_id=t.tenant_id, name=t.name, create_time=_ts(t.created_at),
                   read_only=t.read_only)
    if t.expires_at is not None:
        out.expire_time.CopyFrom(_ts(t.expires_at))
    return out


IPV6_MODES_PB = {
    model.Ipv6Mode.NONE: rpb.IPV6_MODE_UNSPECIFIED,
    model.Ipv6Mode.SLAAC: rpb.IPV6_MODE_SLAAC,
    model.Ipv6Mode.DHCPV6_STATELESS: rpb.IPV6_MODE_DHCPV6_STATELESS,
    model.Ipv6Mode.DHCPV6_STATEFUL: rpb.IPV6_MODE_DHCPV6_STATEFUL,
}
_IPV6_MODES_IN: dict[int, str] = {int(v): k.value for k, v in IPV6_MODES_PB.items()}


def ipv6_mode_in(value: int) -> str:
    """The model's mode of an API enum value; an unknown number stays visible
    (the validation names it)."""
    return _IPV6_MODES_IN.get(value, f"enum value {value}")


def zone_to_pb(z: model.Zone) -> pb.Zone:
    return pb.Zone(
        name=z.name,
        public_cidr=z.public_cidr,
        public_gateway=z.public_gateway,
        public_pool_start=z.public_pool_start,
        public_pool_end=z.public_pool_end,
        vlan_min=z.vlan_min,
        vlan_max=z.vlan_max,
        upstream_dns=list(z.upstream_dns),
        domain_suffix=z.domain_suffix,
        private_gateway_vlan_min=z.private_gateway_vlan_min,
        private_gateway_vlan_max=z.private_gateway_vlan_max,
        reserved_vlans=list(z.reserved_vlans),
        ipv6_pool=z.ipv6_pool,
        routed_pool=z.routed_pool,
        public_cidr6=z.public_cidr6,
        public_gateway6=z.public_gateway6,
        bgp_asn=z.bgp_asn,
        bgp_peers=[rpb.BgpPeer(address=p.address, asn=p.asn) for p in z.bgp_peers],
    )


def network_to_pb(n: model.Network) -> pb.Network:
    return pb.Network(
        id=n.id,
        tenant_id=n.tenant_id,
        name=n.name,
        cidr=n.cidr,
        gateway=n.gateway,
        domain=n.domain,
        dns_servers=list(n.dns_servers),
        domain_search=list(n.domain_search),
        mtu=n.mtu,
        lease_seconds=n.lease_seconds,
        vlan_id=n.vlan_id,
        source_nat_ip=n.source_nat_ip,
        router_id=n.router_id,
        create_time=_ts(n.created_at),
        vpc_id=n.vpc_id,
        acl_id=n.acl_id,
        shared=n.shared,
        shared_tenant_ids=list(n.shared_tenant_ids),
        provider_vlan=n.vlan_id if n.shared else 0,
        ipv6_cidr=n.ipv6_cidr,
        ipv6_mode=IPV6_MODES_PB[n.ipv6_mode],
        routed=n.routed,
        ipv6_gateway=n.ipv6_gateway,
    )


def port_to_pb(p: model.Port, with_user_data: bool = True) -> pb.Port:
    """A port; lists leave the user data out (up to 32 KiB each)."""
    return pb.Port(
        **status_fields(p.status, pb.Port),
        network_id=p.network_id,
        name=p.name,
        mac=p.mac,
        ip=p.ip,
        hostname=p.hostname,
        device_id=p.device_id,
        fqdn=p.fqdn,
        user_data=p.user_data if with_user_data else b"",
        labels=dict(p.labels),
        ssh_key_pair_id=p.ssh_key_pair_id,
        security_group_ids=list(p.security_group_ids),
        port_security=p.port_security,
        allowed_address_pairs=[sgpb.AllowedAddressPair(ip=a.ip, mac=a.mac)
                               for a in p.allowed_address_pairs],
        binding_host=p.binding_host,
        ipv6=p.ipv6,
        metadata_tokens=p.metadata_tokens,
        dhcp_options=[dhcp_option_to_pb(o) for o in p.dhcp_options],
    )


def _pairs(msg: pb.Port) -> tuple[model.AddressPair, ...]:
    return tuple(model.AddressPair(a.ip, a.mac) for a in msg.allowed_address_pairs)


def dhcp_option_to_pb(o: DhcpOption) -> pb.DhcpOption:
    return pb.DhcpOption(name=NAME_OF.get(o.number, ""), number=o.number, type=o.type,
                         values=list(o.values))


def _raw_dhcp_options(msg: pb.Port) -> tuple[RawDhcpOption, ...]:
    return tuple((o.name, o.number, o.type, tuple(o.values)) for o in msg.dhcp_options)


def router_to_pb(r: model.Router) -> pb.Router:
    return pb.Router(
        id=r.id,
        tenant_id=r.tenant_id,
        network_id=r.network_id,
        state=ROUTER_STATES[r.state],
        backend=r.backend.value,
        host=r.host,
        desired_generation=r.desired_generation,
        applied_generation=r.applied_generation,
        services=[pb.ServiceHealth(name=s.name, healthy=s.healthy, detail=s.detail,
                                   version=s.version)
                  for s in r.services],
        last_error=r.last_error,
        update_time=_ts(r.updated_at),
        public_ip=r.public_ip,
        vpc_id=r.vpc_id,
    )


def fill_router_vms(routers: Sequence[pb.Router],
                    read: Callable[[list[str]], Mapping[str, RouterVm]]) -> None:
    """Add the VM fields (13-19) to API routers of the VM backend; ``read``
    gets the VMs of router IDs (not called when no router is a VM's)."""
    ids = [r.id for r in routers if r.backend == model.RouterBackend.VM.value]
    if not ids:
        return
    vms = read(ids)
    for r in routers:
        vm = vms.get(r.id)
        if vm is None:
            if r.backend == model.RouterBackend.VM.value:
                r.vm_state = pb.ROUTER_VM_STATE_DEPLOYING
            continue
        r.vm_state = ROUTER_VM_STATES[vm.state]
        r.vm_host = vm.host
        if vm.healthy_at is not None:
            r.vm_boot_time.FromDatetime(vm.healthy_at)
        r.vm_boot_seconds = vm.boot_seconds
        r.vm_replacements = vm.replacements
        r.vm_detail = vm.detail
        r.control_address = vm.control_ip


HOST_STATES = {"unknown": hpb.HOST_STATE_UNKNOWN, "up": hpb.HOST_STATE_UP,
               "down": hpb.HOST_STATE_DOWN}


def host_to_pb(h: Host) -> hpb.Host:
    out = hpb.Host(id=h.id, name=h.name, address=h.address, fabric=h.fabric, vcpus=h.vcpus,
                   memory_mib=h.memory_mib, role=h.role, state=HOST_STATES[h.state],
                   router_ids=h.router_ids)
    out.create_time.FromDatetime(h.created_at)
    out.update_time.FromDatetime(h.updated_at)
    if h.heartbeat_at is not None:
        out.last_heartbeat.FromDatetime(h.heartbeat_at)
    return out


# ----------------------------------------------------------------- inputs


def network_spec(msg: pb.Network) -> NetworkSpec:
    return NetworkSpec(
        name=msg.name,
        cidr=msg.cidr,
        gateway=msg.gateway,
        domain=msg.domain,
        dns_servers=tuple(msg.dns_servers),
        domain_search=tuple(msg.domain_search),
        mtu=msg.mtu,
        lease_seconds=msg.lease_seconds,
        vpc_id=msg.vpc_id,
        acl_id=msg.acl_id,
        shared=msg.shared,
        shared_tenant_ids=tuple(msg.shared_tenant_ids),
        provider_vlan=msg.provider_vlan,
        ipv6_cidr=msg.ipv6_cidr,
        ipv6_mode=ipv6_mode_in(msg.ipv6_mode),
        routed=msg.routed,
    )


def network_update(msg: pb.Network, mask_paths: Sequence[str]) -> NetworkUpdate:
    paths = resolve_update_mask(mask_paths, NETWORK_UPDATABLE, _present(msg))
    return NetworkUpdate(
        name=msg.name if "name" in paths else None,
        dns_servers=tuple(msg.dns_servers) if "dns_servers" in paths else None,
        domain_search=tuple(msg.domain_search) if "domain_search" in paths else None,
        mtu=msg.mtu if "mtu" in paths else None,
        lease_seconds=msg.lease_seconds if "lease_seconds" in paths else None,
        shared_tenant_ids=(tuple(msg.shared_tenant_ids) if "shared_tenant_ids" in paths
                           else None),
    )


def port_spec(msg: pb.Port) -> PortSpec:
    return PortSpec(
        network_id=msg.network_id,
        name=msg.name,
        mac=msg.mac,
        ip=msg.ip,
        hostname=msg.hostname,
        device_id=msg.device_id,
        user_data=msg.user_data,
        labels=tuple(sorted(msg.labels.items())),
        ssh_key_pair_id=msg.ssh_key_pair_id,
        security_group_ids=tuple(msg.security_group_ids),
        port_security=msg.port_security if msg.HasField("port_security") else True,
        allowed_address_pairs=_pairs(msg),
        binding_host=msg.binding_host,
        ipv6=msg.ipv6,
        metadata_tokens=msg.metadata_tokens,
        dhcp_options=_raw_dhcp_options(msg),
    )


def port_update(msg: pb.Port, mask_paths: Sequence[str]) -> PortUpdate:
    paths = resolve_update_mask(mask_paths, PORT_UPDATABLE, _present(msg))
    return PortUpdate(
        name=msg.name if "name" in paths else None,
        hostname=msg.hostname if "hostname" in paths else None,
        device_id=msg.device_id if "device_id" in paths else None,
        user_data=msg.user_data if "user_data" in paths else None,
        labels=tuple(sorted(msg.labels.items())) if "labels" in paths else None,
        ssh_key_pair_id=msg.ssh_key_pair_id if "ssh_key_pair_id" in paths else None,
        security_group_ids=(tuple(msg.security_group_ids) if "security_group_ids" in paths
                            else None),
        port_security=msg.port_security if "port_security" in paths else None,
        allowed_address_pairs=_pairs(msg) if "allowed_address_pairs" in paths else None,
        binding_host=msg.binding_host if "binding_host" in paths else None,
        metadata_tokens=((msg.metadata_tokens or "optional") if "metadata_tokens" in paths
                         else None),
        dhcp_options=_raw_dhcp_options(msg) if "dhcp_options" in paths else None,
    )


def host_spec(msg: hpb.Host) -> HostSpec:
    return HostSpec(name=msg.name, address=msg.address, fabric=msg.fabric, vcpus=msg.vcpus,
                    memory_mib=msg.memory_mib, role=msg.role or "compute")


def zone_changes(msg: pb.Zone, mask_paths: Sequence[str]) -> dict[str, Any]:
    """Zone field -> new value, for the store's update_zone."""
    paths = resolve_update_mask(mask_paths, ZONE_UPDATABLE, _present(msg))
    changes: dict[str, Any] = {}
    for path in paths:
        value = getattr(msg, path)
        if path == "bgp_peers":
            value = tuple(model.BgpPeer(p.address, p.asn) for p in value)
        changes[path] = tuple(value) if path in ("upstream_dns", "reserved_vlans") else value
    return changes
