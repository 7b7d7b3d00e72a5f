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
