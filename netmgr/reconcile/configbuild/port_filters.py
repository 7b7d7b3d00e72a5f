"""A compute host's filters (security groups, port security) as the message
netmgr pushes to its compute agent: a pure function of a store snapshot."""

from __future__ import annotations

from cloudnet.compute.v1 import port_filters_pb2 as pb

from netmgr.model.security_groups import HostFilterSnapshot, RuleSpec


def filter_rule(r: RuleSpec) -> pb.FilterRule:
    return pb.FilterRule(direction=r.direction, ethertype=r.ethertype, protocol=r.protocol,
                         port_min=r.port_min, port_max=r.port_max, icmp_type=r.icmp_type,
                         icmp_code=r.icmp_code, remote_cidr=r.remote_cidr,
                         remote_group_id=r.remote_group_id)


def build_port_filters(snap: HostFilterSnapshot, generation: int) -> pb.PortFilters:
    ports = []
    for p in snap.ports:
        ips = [p.ip, p.ipv6] if p.ipv6 else [p.ip]
        if not p.filtered:
            ports.append(pb.PortFilter(port_id=p.port_id, mac=p.mac, ips=ips,
                                       unfiltered=True))
            continue
        rules = [filter_rule(r) for gid in p.groups for r in snap.rules.get(gid, ())]
        ports.append(pb.PortFilter(
            port_id=p.port_id, mac=p.mac, ips=ips,
            pairs=[pb.FilterPair(ip=a.ip, mac=a.mac) for a in p.pairs], rules=rules))
    groups = [pb.GroupMembers(group_id=gid, addresses=list(addrs))
              for gid, addrs in sorted(snap.members.items())]
    return pb.PortFilters(generation=generation, host=snap.host, ports=ports, groups=groups)
