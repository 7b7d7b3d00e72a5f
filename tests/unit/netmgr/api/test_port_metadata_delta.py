"""Which port updates may go to the router as a delta of the port's guest
metadata alone: user data, labels, key pair (and the name, in no config);
anything else the router sees goes in a full push."""

from __future__ import annotations

import dataclasses

import pytest

from common.dhcp_options import DhcpOption
from netmgr.api.core import _only_guest_metadata
from tests.lib.router_snapshots import port

BEFORE = port(1, "10.1.1.5")
LATER = dataclasses.replace(BEFORE.status, generation=BEFORE.status.generation + 1)


@pytest.mark.parametrize("change", [
    {"user_data": b"#cloud-config\n"}, {"labels": (("role", "web"),)},
    {"ssh_key_pair_id": "k1"}, {"name": "renamed"},
    {"user_data": b"x", "labels": (("a", "b"),), "ssh_key_pair_id": "k2"},
])
def test_metadata_only_changes_may_go_as_a_delta(change: dict[str, object]) -> None:
    after = dataclasses.replace(BEFORE, status=LATER, **change)  # type: ignore[arg-type]
    assert _only_guest_metadata(BEFORE, after)


@pytest.mark.parametrize("change", [
    {}, {"hostname": "other"}, {"fqdn": "other.test"}, {"metadata_tokens": "required"},
    {"port_security": False}, {"security_group_ids": ("sg1",)},
    {"dhcp_options": (DhcpOption(42, "ip", ("192.0.2.1",)),)},
    {"user_data": b"x", "hostname": "other"}, {"ip": "10.1.1.9"},
])
def test_anything_else_goes_in_full(change: dict[str, object]) -> None:
    after = dataclasses.replace(BEFORE, status=LATER, **change)  # type: ignore[arg-type]
    assert not _only_guest_metadata(BEFORE, after)
