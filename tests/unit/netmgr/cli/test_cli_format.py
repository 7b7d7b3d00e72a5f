"""Table and JSON formatting of the CLI."""

from __future__ import annotations

import json

import pytest
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from netmgr.cli.client import enum_label
from netmgr.cli.output import (
    format_detail,
    format_field,
    format_list,
    format_table,
    format_timestamp,
    to_json,
)


def test_table_aligns_columns_under_a_header() -> None:
    text = format_table(["ID", "NAME", "CIDR"], [["n-1", "web", "10.0.0.0/24"], ["n-22", "db", ""]])
    assert text.splitlines() == [
        "ID    NAME  CIDR",
        "n-1   web   10.0.0.0/24",
        "n-22  db    -",
    ]


def test_table_header_only_when_empty_and_no_trailing_spaces() -> None:
    assert format_table(["ID", "NAME"], []) == "ID  NAME"
    text = format_table(["A", "B"], [["long value", "x"], ["y", ""]])
    assert all(line == line.rstrip() for line in text.splitlines())


def test_table_escapes_control_characters() -> None:
    text = format_table(["NAME"], [["evil\nrow\tx\x1b"]])
    assert text.splitlines() == ["NAME", "evil\\nrow\\tx\\x1b"]


def test_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="row has 1 cells, expected 2"):
        format_table(["A", "B"], [["only one"]])


def test_enum_labels_drop_the_type_prefix() -> None:
    assert enum_label(pb.RouterState, pb.ROUTER_STATE_ACTIVE) == "ACTIVE"
    assert enum_label(pb.RouterState, pb.ROUTER_STATE_UNREACHABLE) == "UNREACHABLE"
    assert enum_label(pb.ObjectState, pb.OBJECT_STATE_ERROR) == "ERROR"
    assert enum_label(pb.ObjectState.DESCRIPTOR, pb.OBJECT_STATE_PENDING) == "PENDING"
    assert enum_label(pb.ObjectState, 99) == "99"


def test_timestamps_are_iso_utc() -> None:
    t = pb.Tenant(id="t-1", name="acme")
    assert format_field(t, "create_time") == ""
    t.create_time.FromSeconds(1_700_000_000)
    assert format_timestamp(t.create_time) == "2023-11-14T22:13:20Z"
    assert format_field(t, "create_time") == "2023-11-14T22:13:20Z"


def test_field_rendering_of_repeated_enums_and_nested() -> None:
    r = pb.Router(
        id="r-1",
        state=pb.ROUTER_STATE_DEGRADED,
        services=[
            pb.ServiceHealth(name="dnsmasq", healthy=True),
            pb.ServiceHealth(name="nft", healthy=False, detail="rejected"),
        ],
    )
    assert format_field(r, "state") == "DEGRADED"
    assert format_field(r, "services") == "dnsmasq: healthy; nft: unhealthy (rejected)"
    n = pb.Network(dns_servers=["1.1.1.1", "9.9.9.9"])
    assert format_field(n, "dns_servers") == "1.1.1.1, 9.9.9.9"
    assert format_field(pb.WhoAmIResponse(admin=True), "admin") == "yes"


def test_detail_lists_fields_in_order() -> None:
    p = pb.Port(id="p-1", network_id="n-1", ip="10.0.0.5", state=pb.OBJECT_STATE_ACTIVE)
    lines = format_detail(p).splitlines()
    assert lines[0].split() == ["FIELD", "VALUE"]
    assert lines[1].split() == ["id", "p-1"]
    assert ["state", "ACTIVE"] in [line.split() for line in lines]
    assert ["name", "-"] in [line.split() for line in lines]


def test_list_columns_of_routers() -> None:
    r = pb.Router(
        id="r-1",
        network_id="n-1",
        state=pb.ROUTER_STATE_PROVISIONING,
        backend="netns",
        desired_generation=4,
        applied_generation=3,
    )
    header, row = format_list("Router", [r]).splitlines()
    assert header.split()[:3] == ["ID", "NETWORK", "STATE"]
    assert "PROVISIONING" in row
    assert "3/4" in row
    assert "ROUTER_STATE" not in row


def test_json_uses_proto_field_names_and_arrays() -> None:
    n = pb.Network(id="n-1", name="web", cidr="10.0.0.0/24", dns_servers=["1.1.1.1"])
    one = json.loads(to_json(n))
    assert one["dns_servers"] == ["1.1.1.1"]
    assert one["cidr"] == "10.0.0.0/24"
    many = json.loads(to_json([n, n]))
    assert isinstance(many, list)
    assert len(many) == 2
    assert many[0]["id"] == "n-1"
    assert json.loads(to_json([])) == []
    p = json.loads(to_json(pb.Port(state=pb.OBJECT_STATE_ACTIVE)))
    assert p["state"] == "OBJECT_STATE_ACTIVE"
