"""The metadata service's pure parts: each guest's tree, verify naming the
port, the nginx config and the nftables set of who may ask."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import metadata_pb2 as mpb

from router import runtime
from router.errors import ConfigError
from router.services.metadata_tree import guest_tree, tree_digest
from router.services.registry import router_services
from tests.lib.routerconfigs import HOST, PATHS, good_config, render

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHs7cQdJ3m1mI3h1w0b0c4mQ3xC1uYy3cMuR2x1tY1a9"


def guest(**kw: object) -> mpb.GuestMetadata:
    g = mpb.GuestMetadata(port_id="p1", interface="g-net1", mac="02:aa:00:00:00:11",
                          ip="10.10.0.11", hostname="vm1", fqdn="vm1.tenant.test",
                          availability_zone="zone1", network_id="net1")
    for k, v in kw.items():
        if k == "labels":
            g.labels.update(v)  # type: ignore[call-overload]
        else:
            setattr(g, k, v)
    return g


def config(*guests: mpb.GuestMetadata) -> pb.RouterConfig:
    cfg = good_config()
    cfg.guest_metadata.extend(guests or (guest(),))
    return cfg


def test_a_tree_has_ec2_cloudstack_and_openstack_paths() -> None:
    tree = guest_tree(guest(user_data=b"#cloud-config\n", public_ip="203.0.113.50",
                            ssh_key_name="laptop", ssh_public_key=KEY,
                            labels={"role": "web"}, device_id="vm-42"))
    meta = "latest/meta-data"
    assert tree[f"{meta}/instance-id"] == b"p1"
    assert tree[f"{meta}/vm-id"] == b"vm-42"
    assert tree[f"{meta}/local-hostname"] == b"vm1"
    assert tree[f"{meta}/public-ipv4"] == b"203.0.113.50"
    assert tree[f"{meta}/public-hostname"] == b"203.0.113.50"
    assert tree[f"{meta}/placement/availability-zone"] == b"zone1"
    assert tree[f"{meta}/public-keys/_index"] == b"0=laptop"
    assert tree[f"{meta}/public-keys/0/openssh-key"] == KEY.encode() + b"\n"
    assert tree[f"{meta}/tags/instance/role"] == b"web"
    assert "public-keys/" in tree[f"{meta}/_index"].decode().splitlines()
    assert tree["latest/user-data"] == b"#cloud-config\n"
    assert tree["latest/_index"] == b"meta-data/\nuser-data"
    md = json.loads(tree["openstack/latest/meta_data.json"])
    assert (md["uuid"], md["public_keys"], md["meta"]) == ("p1", {"laptop": KEY},
                                                         {"role": "web"})
    assert tree["openstack/latest/user_data"] == b"#cloud-config\n"
    # Every listed entry of every listing exists.
    for path, listing in tree.items():
        if path.endswith("_index"):
            d = path[: -len("_index")]
            for entry in listing.decode().splitlines():
                name = entry.split("=")[0]
                assert any(p.startswith(d + name) for p in tree), (path, entry)


def test_no_user_data_no_key_no_public_ip_means_no_such_paths() -> None:
    tree = guest_tree(guest())
    assert "latest/user-data" not in tree
    assert "openstack/latest/user_data" not in tree
    assert "latest/meta-data/public-ipv4" not in tree
    assert not any("public-keys" in p for p in tree)
    assert tree["latest/_index"] == b"meta-data/"


def test_the_digest_changes_with_any_byte() -> None:
    a = tree_digest(guest_tree(guest(user_data=b"a")))
    assert a == tree_digest(guest_tree(guest(user_data=b"a")))
    assert a != tree_digest(guest_tree(guest(user_data=b"b")))


def test_render_lists_listeners_and_digests_and_nftables_who_may_ask() -> None:
    cfg = config(guest(), guest(port_id="p2", mac="02:aa:00:00:00:12", ip="10.10.0.12",
                               hostname="web-2"))
    out = render("metadata", cfg)
    assert "listen 169.254.169.254:80;" in out["nginx.conf"]
    assert "listen 10.10.0.1:80;" in out["nginx.conf"]
    assert f"root {PATHS.path('metadata', 'by-ip')}/$remote_addr;" in out["nginx.conf"]
    assert set(json.loads(out["trees"])) == {"10.10.0.11", "10.10.0.12"}
    nft = render("nftables", cfg)["cloudnet.nft"]
    # Who may ask: port security's own set (one element per port), no second set.
    assert "ip saddr @port_sec tcp dport { 80, 8080 }" in nft
    assert nft.count("type ifname . ether_addr . ipv4_addr") == 2  # port_sec, port_arp
    assert render("metadata", good_config()) == {}


Mutation = Callable[[mpb.GuestMetadata], None]
BAD: list[tuple[str, dict[str, object], str]] = [
    ("unknown interface", {"interface": "g-nope"}, "not a guest interface"),
    ("ip off the network", {"ip": "10.99.0.5"}, "not on g-net1"),
    ("bad mac", {"mac": "02:aa"}, "MAC"),
    ("hostname newline", {"hostname": "vm1\nx"}, "DNS label"),
    ("user data too big", {"user_data": b"x" * (32 * 1024 + 1)}, "user data"),
    ("label value quote", {"labels": {"k": 'a"b'}}, "label"),
    ("label key slash", {"labels": {"../x": "v"}}, "label"),
    ("key with newline", {"ssh_key_name": "k", "ssh_public_key": KEY + "\nx"}, "SSH key"),
    ("zone path", {"availability_zone": "../z"}, "availability zone"),
]


@pytest.mark.parametrize(("fields", "reason"), [(f, r) for _, f, r in BAD],
                         ids=[i for i, _, _ in BAD])
def test_verify_rejects_bad_metadata_naming_the_port(fields: dict[str, object],
                                                     reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        runtime.verify(config(guest(**fields)), router_services(HOST))
    assert "port p1" in str(e.value)
    assert reason in str(e.value)
    assert (e.value.kind, e.value.object_id) == ("port", "p1")


def test_verify_passes_a_full_guest() -> None:
    runtime.verify(config(guest(user_data=b"x" * 32 * 1024, ssh_key_name="k",
                                ssh_public_key=KEY, labels={"a.b-c": "x y:z@1"},
                                public_ip="203.0.113.5", device_id="vm:1")),
                   router_services(HOST))
