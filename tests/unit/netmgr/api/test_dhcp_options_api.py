"""Per-port DHCP options through the API: by name or number, typed values
normalised and shown back; bad options refused naming the option and its
part, nothing created or changed."""

from __future__ import annotations

import grpc
import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from tests.lib.netmgr_cloud import Api, Cloud, bad_fields, rpc_error

Code = grpc.StatusCode
Opt = pb.DhcpOption


def network(api: Api) -> pb.Network:
    return api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(
        name="web", cidr="10.0.0.0/24")))


def test_options_by_name_or_number_are_normalised_and_shown(acme: tuple[pb.Tenant, Api]) -> None:
    _, api = acme
    net = network(api)
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, dhcp_options=[
        Opt(name="ntp-server", values=["10.0.0.5", "10.0.0.6"]),
        Opt(number=121, values=["192.168.50.0/24,10.0.0.1"]),
        Opt(name="NEXT-SERVER", values=["10.0.0.7"]),
        Opt(name="bootfile-name", values=["pxelinux.0"]),
        Opt(number=224, type="string", values=["hello"]),
        Opt(number=225, type="uint16", values=["01234"]),
        Opt(name="domain-search", values=["Corp.Example."]),
    ])))
    got = [(o.name, o.number, o.type, list(o.values))
           for o in api.GetPort(pb.GetPortRequest(id=port.id)).dhcp_options]
    assert got == [
        ("ntp-server", 42, "ips", ["10.0.0.5", "10.0.0.6"]),
        ("classless-static-route", 121, "routes", ["192.168.50.0/24,10.0.0.1"]),
        ("next-server", 0, "ip", ["10.0.0.7"]),
        ("bootfile-name", 67, "string", ["pxelinux.0"]),
        ("", 224, "string", ["hello"]),
        ("", 225, "uint16", ["1234"]),
        ("domain-search", 119, "domains", ["corp.example"]),
    ]
    updated = api.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=port.id), update_mask=FieldMask(paths=["dhcp_options"])))
    assert list(updated.dhcp_options) == []


BAD: list[tuple[list[pb.DhcpOption], str]] = [
    ([Opt(name="ntp", values=["10.0.0.5"])], "port.dhcp_options[0].name"),
    ([Opt(values=["x"])], "port.dhcp_options[0].number"),
    ([Opt(number=300, type="string", values=["x"])], "port.dhcp_options[0].number"),
    ([Opt(number=53, type="uint8", values=["1"])], "port.dhcp_options[0].number"),
    ([Opt(number=1, type="ip", values=["255.0.0.0"])], "port.dhcp_options[0].number"),
    ([Opt(number=224, values=["x"])], "port.dhcp_options[0].type"),
    # Types dnsmasq refuses for these numbers (its own option table).
    ([Opt(number=33, type="string", values=["hello"])], "port.dhcp_options[0].type"),
    ([Opt(number=150, type="uint8", values=["1"])], "port.dhcp_options[0].type"),
    ([Opt(number=120, type="string", values=["sip"])], "port.dhcp_options[0].type"),
    ([Opt(number=224, type="float", values=["1.5"])], "port.dhcp_options[0].type"),
    ([Opt(name="ntp-server", type="string", values=["x"])], "port.dhcp_options[0].type"),
    ([Opt(name="ntp-server", number=43, values=["10.0.0.1"])], "port.dhcp_options[0].number"),
    ([Opt(name="ntp-server")], "port.dhcp_options[0].values"),
    ([Opt(name="ntp-server", values=["10.0.0.1", "ntp.example"])],
     "port.dhcp_options[0].values[1]"),
    ([Opt(name="classless-static-route", values=["10.0.0.0/8"])],
     "port.dhcp_options[0].values[0]"),
    ([Opt(name="classless-static-route", values=["10.0.0.1/8,10.0.0.1"])],
     "port.dhcp_options[0].values[0]"),
    ([Opt(name="bootfile-name", values=["a b"])], "port.dhcp_options[0].values[0]"),
    ([Opt(name="bootfile-name", values=['x",y'])], "port.dhcp_options[0].values[0]"),
    ([Opt(name="bootfile-name", values=["x\ndhcp-option=3,1.2.3.4"])],
     "port.dhcp_options[0].values[0]"),
    ([Opt(name="bootfile-name", values=["a", "b"])], "port.dhcp_options[0].values"),
    ([Opt(number=225, type="uint16", values=["65536"])], "port.dhcp_options[0].values[0]"),
    ([Opt(number=225, type="uint8", values=["-1"])], "port.dhcp_options[0].values[0]"),
    ([Opt(name="domain-search", values=["bad_name.example"])],
     "port.dhcp_options[0].values[0]"),
    ([Opt(name="ntp-server", values=["10.0.0.1"] * 17)], "port.dhcp_options[0].values"),
    ([Opt(number=226, type="string", values=["x" * 256])], "port.dhcp_options[0].values[0]"),
    ([Opt(name="ntp-server", values=["10.0.0.1"]), Opt(number=42, values=["10.0.0.2"])],
     "port.dhcp_options"),
    ([Opt(name="next-server", values=["10.0.0.1"])], "port.dhcp_options"),
    ([Opt(number=200 + i, type="uint8", values=["1"]) for i in range(17)],
     "port.dhcp_options"),
]


@pytest.mark.parametrize(("options", "field"), BAD)
def test_bad_options_are_refused_naming_the_option_and_nothing_changes(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], options: list[pb.DhcpOption], field: str
) -> None:
    _, api = acme
    net = network(api)
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, dhcp_options=[
        Opt(name="mtu", values=["1400"])])))
    before = cloud.row_counts()["ports"]
    err = rpc_error(lambda: api.CreatePort(pb.CreatePortRequest(port=pb.Port(
        network_id=net.id, dhcp_options=options))))
    assert err.code() == Code.INVALID_ARGUMENT
    assert bad_fields(err) == [field]
    assert len(err.details()) < 400
    assert "\n" not in err.details()
    err = rpc_error(lambda: api.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=port.id, dhcp_options=options))))
    assert bad_fields(err) == [field]
    assert cloud.row_counts()["ports"] == before
    assert [(o.name, list(o.values)) for o in api.GetPort(
        pb.GetPortRequest(id=port.id)).dhcp_options] == [("mtu", ["1400"])]
