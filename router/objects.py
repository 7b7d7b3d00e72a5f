"""The API objects of a router config that the router can leave out one by one.

When a check (ours or a daemon's) refuses one object, the router applies the
rest of the config: the refused object is replaced by its definition in the
config the router ran before (when it had one and that one is different), or
left out, and is reported in the status with the reason. Objects others
depend on (interfaces, networks, public addresses, ACL lists) cannot be left
out: a refusal of one of them still rejects the whole config.

A port's DHCP options are an object of their own (``DHCP_OPTIONS``, by the
port's ID): options dnsmasq refuses are left out (or kept as they were) while
the port itself, its lease, name and filters, runs on.
"""

from __future__ import annotations

from cloudnet.router.v1 import agent_pb2 as pb

from router.services.base import ObjectId

PORT = "port"
DHCP_OPTIONS = "dhcpoptions"
# kind -> the RouterConfig fields that hold objects of that kind (by `id`).
TOP_LEVEL: dict[str, tuple[str, ...]] = {
    "loadbalancer": ("load_balancers",),
    "vpnconnection": ("vpn_connections",),
    "portforward": ("port_forwards",),
    "staticnat": ("static_nats",),
    "firewall": ("ingress_rules", "egress_rules", "guest_ingress_rules"),
    "dnsrecord": ("dns_records",),
}
KINDS = frozenset({PORT, DHCP_OPTIONS, *TOP_LEVEL})


def definition(cfg: pb.RouterConfig | None, oid: ObjectId) -> list[bytes]:
    """The serialised definitions of object ``oid`` in ``cfg`` (none: absent)."""
    if cfg is None:
        return []
    kind, object_id = oid
    if kind == PORT:
        return [h.SerializeToString(deterministic=True) for n in cfg.guest_networks
                for h in n.hosts if h.port_id == object_id]
    if kind == DHCP_OPTIONS:
        return [o.SerializeToString(deterministic=True) for n in cfg.guest_networks
                for h in n.hosts if h.port_id == object_id for o in h.options]
    return [o.SerializeToString(deterministic=True) for field in TOP_LEVEL.get(kind, ())
            for o in getattr(cfg, field) if o.id == object_id]


def leave_out(cfg: pb.RouterConfig, previous: pb.RouterConfig | None,
              oid: ObjectId) -> pb.RouterConfig | None:
    """``cfg`` with object ``oid`` as it was in ``previous`` (if it was there
    and differs), else without it; None if ``oid`` is not an object of ``cfg``
    that can be left out."""
    kind, object_id = oid
    if kind not in KINDS or not object_id or not definition(cfg, oid):
        return None
    old = definition(previous, oid)
    keep_old = bool(old) and old != definition(cfg, oid)
    out = pb.RouterConfig()
    out.CopyFrom(cfg)
    if kind == PORT:
        _replace_port(out, previous if keep_old else None, object_id)
        return out
    if kind == DHCP_OPTIONS:
        _replace_options(out, previous if keep_old else None, object_id)
        return out
    for field in TOP_LEVEL[kind]:
        items = getattr(out, field)
        kept = [o for o in items if o.id != object_id]
        if keep_old and previous is not None:
            kept += [o for o in getattr(previous, field) if o.id == object_id]
        del items[:]
        items.extend(kept)
    return out


def _replace_port(cfg: pb.RouterConfig, previous: pb.RouterConfig | None, port_id: str) -> None:
    old = {n.network_id: [h for h in n.hosts if h.port_id == port_id]
           for n in (previous.guest_networks if previous is not None else [])}
    for net in cfg.guest_networks:
        kept = [h for h in net.hosts if h.port_id != port_id] + old.get(net.network_id, [])
        del net.hosts[:]
        net.hosts.extend(kept)


def _replace_options(cfg: pb.RouterConfig, previous: pb.RouterConfig | None,
                     port_id: str) -> None:
    old = [o for n in (previous.guest_networks if previous is not None else [])
           for h in n.hosts if h.port_id == port_id for o in h.options]
    for net in cfg.guest_networks:
        for h in net.hosts:
            if h.port_id == port_id:
                del h.options[:]
                h.options.extend(old)
