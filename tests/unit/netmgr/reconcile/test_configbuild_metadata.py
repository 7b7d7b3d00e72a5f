"""The model -> each guest's metadata in the router config: user data,
labels, key pair, static NAT address, zone; and the router accepts it."""

from __future__ import annotations

import dataclasses

from netmgr.model import edge as me
from netmgr.model.core import Status
from netmgr.reconcile.configbuild.router import build_router_config, guest_interface_name
from router.services import metadata_tree
from tests.lib.router_snapshots import NET, NOW, port, snapshot

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHs7cQdJ3m1mI3h1w0b0c4mQ3xC1uYy3cMuR2x1tY1a9"


def test_every_port_gets_its_metadata() -> None:
    p1 = dataclasses.replace(port(1, "10.1.1.11"), user_data=b"#cloud-config\n",
                             labels=(("role", "web"),), ssh_key_pair_id="k1",
                             fqdn="vm1.web.demo.cloud.internal", device_id="vm-1")
    p2 = port(2, "10.1.1.12")
    nat = me.StaticNat(status=Status(id="s1", tenant_id="t1", generation=3, error="",
                                     created_at=NOW),
                       network_id=NET.id, public_ip_id="ip1", port_id="p1",
                       public_ip="203.0.113.50", private_ip="10.1.1.11")
    snap = dataclasses.replace(snapshot(p2, p1), edge=me.EdgeSnapshot(static_nats=(nat,)),
                               ssh_keys={"p1": ("laptop", KEY)})
    cfg = build_router_config(snap)
    g1, g2 = cfg.guest_metadata
    assert (g1.port_id, g1.interface, g1.mac, g1.ip, g1.hostname) == (
        "p1", guest_interface_name(NET.id), p1.mac, "10.1.1.11", "vm1")
    assert (g1.user_data, dict(g1.labels), g1.ssh_key_name, g1.ssh_public_key) == (
        b"#cloud-config\n", {"role": "web"}, "laptop", KEY)
    assert (g1.public_ip, g1.availability_zone, g1.device_id, g1.fqdn) == (
        "203.0.113.50", "zone1", "vm-1", "vm1.web.demo.cloud.internal")
    assert (g2.port_id, g2.user_data, g2.public_ip, g2.ssh_public_key) == ("p2", b"", "", "")
    metadata_tree.verify(cfg)  # what netmgr builds, the router's metadata service accepts
