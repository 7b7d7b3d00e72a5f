"""Redundant routers' model objects to proto (``netmgr.model.redundancy``)."""

from __future__ import annotations

import datetime as dt

from cloudnet.netmgr.v1 import netmgr_pb2
from cloudnet.netmgr.v1 import redundancy_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from netmgr.model.redundancy import Redundancy


def instances_to_pb(red: Redundancy | None) -> list[pb.RouterInstance]:
    if red is None:
        return []
    out = []
    for i in (0, 1):
        r = red.report(i)
        since = Timestamp()
        if r.since > 0:
            since.FromDatetime(dt.datetime.fromtimestamp(r.since, dt.UTC).replace(tzinfo=None))
        out.append(pb.RouterInstance(
            instance=i, host=red.hosts[i], role=r.role, healthy=r.healthy and r.reachable,
            last_transition=since if r.since > 0 else None,
            priority=r.priority or red.priority(i), demoted=r.demoted, reachable=r.reachable,
            detail=r.detail))
    return out


def redundancy_to_pb(router_id: str, red: Redundancy | None) -> pb.RouterRedundancy:
    return pb.RouterRedundancy(router_id=router_id, redundant=red is not None,
                               instances=instances_to_pb(red),
                               events=list(red.events) if red else [])


def add_instances(router: netmgr_pb2.Router, red: Redundancy | None) -> netmgr_pb2.Router:
    router.instances.extend(instances_to_pb(red))
    return router
