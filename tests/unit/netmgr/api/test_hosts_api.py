"""netmgr's HostService: compute agents register their hosts (admin only)."""

from __future__ import annotations

import grpc
from cloudnet.netmgr.v1 import hosts_pb2 as hpb
from cloudnet.netmgr.v1 import hosts_pb2_grpc as hrpc

from tests.lib.netmgr_cloud import ADMIN, bad_fields, rpc_error

ADMIN_MD = (("authorization", f"Bearer {ADMIN}"),)


def host(**kw) -> hpb.Host:
    fields = dict(name="host-a", address="127.0.0.1:7171", fabric="ovs", vcpus=2,
                  memory_mib=24000)
    fields.update(kw)
    return hpb.Host(**fields)


def test_register_is_idempotent_by_name_and_lists(cloud) -> None:
    stub = hrpc.HostServiceStub(cloud.channel)
    a = stub.RegisterHost(hpb.RegisterHostRequest(host=host()), metadata=ADMIN_MD)
    again = stub.RegisterHost(hpb.RegisterHostRequest(host=host(address="10.0.0.2:7171")),
                              metadata=ADMIN_MD)
    assert again.id == a.id
    assert again.address == "10.0.0.2:7171"
    stub.RegisterHost(hpb.RegisterHostRequest(host=host(name="host-b", fabric="vxlan")),
                      metadata=ADMIN_MD)
    listed = stub.ListHosts(hpb.ListHostsRequest(), metadata=ADMIN_MD).hosts
    assert [h.name for h in listed] == ["host-a", "host-b"]
    assert stub.GetHost(hpb.GetHostRequest(id=a.id), metadata=ADMIN_MD).fabric == "ovs"
    stub.DeleteHost(hpb.DeleteHostRequest(id=a.id), metadata=ADMIN_MD)
    err = rpc_error(lambda: stub.GetHost(hpb.GetHostRequest(id=a.id), metadata=ADMIN_MD))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_bad_host_names_every_field_and_creates_nothing(cloud) -> None:
    stub = hrpc.HostServiceStub(cloud.channel)
    err = rpc_error(lambda: stub.RegisterHost(hpb.RegisterHostRequest(host=host(
        name="Bad_Name", address="", fabric="token-ring", vcpus=0, memory_mib=0)),
        metadata=ADMIN_MD))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(bad_fields(err)) == ["host.address", "host.fabric", "host.memory_mib",
                                       "host.name", "host.vcpus"]
    assert not stub.ListHosts(hpb.ListHostsRequest(), metadata=ADMIN_MD).hosts


def test_tenants_cannot_register_hosts(cloud, acme) -> None:
    _, api = acme
    stub = hrpc.HostServiceStub(cloud.channel)
    err = rpc_error(lambda: stub.RegisterHost(hpb.RegisterHostRequest(host=host()),
                                              metadata=api.metadata))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_silent_compute_host_is_down_with_an_event_and_its_guests_marked(cloud, acme) -> None:
    import datetime as dt

    from cloudnet.netmgr.v1 import events_pb2 as evpb
    from cloudnet.netmgr.v1 import events_pb2_grpc as evrpc
    from cloudnet.netmgr.v1 import netmgr_pb2 as pb

    _, api = acme
    stub = hrpc.HostServiceStub(cloud.channel)
    cmp1 = stub.RegisterHost(hpb.RegisterHostRequest(host=host(name="cmp1")),
                             metadata=ADMIN_MD)
    stub.Heartbeat(hpb.HeartbeatRequest(name="cmp1"), metadata=ADMIN_MD)
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="n",
                                                                        cidr="10.0.0.0/24")))
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id,
                                                            binding_host="cmp1")))
    assert api.GetPort(pb.GetPortRequest(id=port.id)).binding_host_state == "up"
    assert cloud.store.hosts.expire(dt.timedelta(hours=1)) == []  # within its grace
    assert cloud.store.hosts.expire(dt.timedelta(0)) == []  # no router host moved
    (h,) = stub.ListHosts(hpb.ListHostsRequest(), metadata=ADMIN_MD).hosts
    assert (h.name, h.state) == ("cmp1", hpb.HOST_STATE_DOWN)
    # The guest's port stays where it is, marked.
    assert api.GetPort(pb.GetPortRequest(id=port.id)).binding_host_state == "down"
    assert [p.binding_host_state for p in api.ListPorts(pb.ListPortsRequest()).ports] == ["down"]
    events = evrpc.EventServiceStub(cloud.channel).ListEvents(
        evpb.ListEventsRequest(filter=evpb.EventFilter(kind="host", object_id=cmp1.id)),
        metadata=ADMIN_MD).events
    assert [(e.code, "1 guest ports stay" in e.detail) for e in events] == [
        ("UP", False), ("DOWN", True)]
    stub.Heartbeat(hpb.HeartbeatRequest(name="cmp1"), metadata=ADMIN_MD)
    assert api.GetPort(pb.GetPortRequest(id=port.id)).binding_host_state == "up"
