"""Protobuf messages <-> model objects and validation inputs (the only place).

Output-only fields of a request message (ids, allocated values, state) are
ignored, as resource-oriented APIs do. Update requests resolve their field
mask here: the paths that may change, or, for an empty mask, every
updatable field the message sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from netmgr.model import core as model
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

ROUTER_STATES = {
    model.RouterState.PROVISIONING: pb.ROUTER_STATE_PROVISIONING,
    model.RouterState.ACTIVE: pb.ROUTER_STATE_ACTIVE,
    model.RouterState.DEGRADED: pb.ROUTER_STATE_DEGRADED,
    model.RouterState.UNREACHABLE: pb.ROUTER_STATE_UNREACHABLE,
}
OBJECT_STATES = {
    model.ObjectState.PENDING: pb.OBJECT_STATE_PENDING,
    model.ObjectState.ACTIVE: pb.OBJECT_STATE_ACTIVE,
    model.ObjectState.ERROR: pb.OBJECT_STATE_ERROR,
}


def _ts(when: Any) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def _present(msg: Message) -> set[str]:
    """Names of the fields a proto3 message sets (non-default values)."""
    return {field.name for field, _ in msg.ListFields()}


# ---------------------------------------------------------------- outputs


def tenant_to_pb(t: model.Tenant) -> pb.Tenant:
    return pb.Tenant(id=t.id, name=t.name, create_time=_ts(t.created_at))


def token_to_pb(t: model.Token) -> pb.Token:
    return pb.Token(id=t.id, tenant_id=t.tenant_id, name=t.name, create_time=_ts(t.created_at))


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
    )


def port_to_pb(p: model.Port) -> pb.Port:
    return pb.Port(
        id=p.id,
        tenant_id=p.tenant_id,
        network_id=p.network_id,
        name=p.name,
        mac=p.mac,
        ip=p.ip,
        hostname=p.hostname,
        device_id=p.device_id,
        state=OBJECT_STATES[p.state],
        error=p.error,
        create_time=_ts(p.created_at),
        fqdn=p.fqdn,
    )


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
    )


def network_update(msg: pb.Network, mask_paths: Sequence[str]) -> NetworkUpdate:
    paths = resolve_update_mask(mask_paths, NETWORK_UPDATABLE, _present(msg))
    return NetworkUpdate(
        name=msg.name if "name" in paths else None,
        dns_servers=tuple(msg.dns_servers) if "dns_servers" in paths else None,
        domain_search=tuple(msg.domain_search) if "domain_search" in paths else None,
        mtu=msg.mtu if "mtu" in paths else None,
        lease_seconds=msg.lease_seconds if "lease_seconds" in paths else None,
    )


def port_spec(msg: pb.Port) -> PortSpec:
    return PortSpec(
        network_id=msg.network_id,
        name=msg.name,
        mac=msg.mac,
        ip=msg.ip,
        hostname=msg.hostname,
        device_id=msg.device_id,
    )


def port_update(msg: pb.Port, mask_paths: Sequence[str]) -> PortUpdate:
    paths = resolve_update_mask(mask_paths, PORT_UPDATABLE, _present(msg))
    return PortUpdate(
        name=msg.name if "name" in paths else None,
        hostname=msg.hostname if "hostname" in paths else None,
        device_id=msg.device_id if "device_id" in paths else None,
    )


def zone_changes(msg: pb.Zone, mask_paths: Sequence[str]) -> dict[str, Any]:
    """Zone field -> new value, for the store's update_zone."""
    paths = resolve_update_mask(mask_paths, ZONE_UPDATABLE, _present(msg))
    changes: dict[str, Any] = {}
    for path in paths:
        value = getattr(msg, path)
        changes[path] = tuple(value) if path == "upstream_dns" else value
    return changes
