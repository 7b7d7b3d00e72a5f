"""Each guest's metadata tree: the files the router's nginx serves to one
guest (pure; ``router.services.metadata`` writes them).

One tree answers three clouds' clients: EC2 (``/latest/meta-data/...``,
``/latest/user-data``), CloudStack (the same paths with its own keys:
service-offering, vm-id, public-hostname, ...) and OpenStack
(``/openstack/latest/meta_data.json``, ``user_data``, ``network_data.json``).
A directory's listing, EC2's text format (one entry a line, directories
ending in "/"), is its ``_index`` file, nginx's index.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import metadata_pb2 as mpb

from router.errors import ConfigError
from router.lib import validate

KIND = "port"
INDEX = "_index"
MAX_USER_DATA = 32 * 1024
SERVICE_OFFERING = "cloudnet"
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9 ._:@+=,-]{0,255}")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_PUBLIC_KEY = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}")
_DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{0,64}")

Tree = dict[str, bytes]


def verify(cfg: pb.RouterConfig) -> None:
    """Every value that reaches a guest's tree, checked again here: the agent
    trusts nothing it did not check itself."""
    guest_ifaces = {i.name: [ipaddress.IPv4Interface(a).network for a in i.addresses]
                    for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_GUEST}
    seen: set[str] = set()
    for g in cfg.guest_metadata:
        validate.check_id("port", g.port_id)
        what = f"port {g.port_id}"

        def bad(reason: str, port_id: str = g.port_id, what: str = what) -> ConfigError:
            return ConfigError(f"{what}: metadata: {reason}", KIND, port_id)

        if g.interface not in guest_ifaces:
            raise bad(f"{g.interface!r} is not a guest interface of the router")
        validate.check_mac(what, g.mac, KIND, g.port_id)
        ip = validate.parse_ipv4(what, g.ip, KIND, g.port_id)
        if not any(ip in n for n in guest_ifaces[g.interface]):
            raise bad(f"{g.ip} is not on {g.interface}'s network")
        if g.ip in seen:
            raise bad(f"{g.ip} has metadata twice")
        seen.add(g.ip)
        if g.public_ip:
            validate.parse_ipv4(what, g.public_ip, KIND, g.port_id)
        if not validate.is_dns_label(g.hostname):
            raise bad(f"host name {g.hostname[:40]!r} is not a DNS label")
        if g.fqdn and not validate.is_domain(g.fqdn):
            raise bad(f"FQDN {g.fqdn[:40]!r} is not a domain name")
        if g.availability_zone and not _LABEL_KEY.fullmatch(g.availability_zone):
            raise bad(f"availability zone {g.availability_zone[:40]!r} is not a plain name")
        if len(g.user_data) > MAX_USER_DATA:
            raise bad(f"user data of {len(g.user_data)} bytes (at most {MAX_USER_DATA})")
        for k, v in g.labels.items():
            if not _LABEL_KEY.fullmatch(k) or not _LABEL_VALUE.fullmatch(v):
                raise bad(f"label {k[:40]!r} has a key or value outside the allowed characters")
        if g.ssh_public_key and not (_PUBLIC_KEY.fullmatch(g.ssh_public_key)
                                     and _KEY_NAME.fullmatch(g.ssh_key_name)):
            raise bad("the SSH key pair is not '<type> <base64>' with a plain name")
        if not _DEVICE_ID.fullmatch(g.device_id):
            raise bad(f"device ID {g.device_id[:40]!r} is not plain")


def _listing(names: list[str]) -> bytes:
    return "\n".join(names).encode()


def guest_tree(g: mpb.GuestMetadata) -> Tree:
    """Relative path -> content of one guest's tree (from verified values)."""
    meta = "latest/meta-data"
    leaves: dict[str, str] = {
        "instance-id": g.port_id,
        "vm-id": g.device_id or g.port_id,
        "hostname": g.fqdn or g.hostname,
        "local-hostname": g.hostname,
        "local-ipv4": g.ip,
        "mac": g.mac,
        "availability-zone": g.availability_zone,
        "service-offering": SERVICE_OFFERING,
        "public-hostname": g.public_ip or g.fqdn or g.hostname,
    }
    if g.public_ip:
        leaves["public-ipv4"] = g.public_ip
    tree: Tree = {f"{meta}/{k}": v.encode() for k, v in leaves.items()}
    dirs = ["placement/"]
    tree[f"{meta}/placement/availability-zone"] = g.availability_zone.encode()
    tree[f"{meta}/placement/{INDEX}"] = b"availability-zone"
    if g.ssh_public_key:
        dirs.append("public-keys/")
        tree[f"{meta}/public-keys/{INDEX}"] = f"0={g.ssh_key_name}".encode()
        tree[f"{meta}/public-keys/0/{INDEX}"] = b"openssh-key"
        tree[f"{meta}/public-keys/0/openssh-key"] = g.ssh_public_key.encode() + b"\n"
    if g.labels:
        dirs.append("tags/")
        tree[f"{meta}/tags/{INDEX}"] = b"instance/"
        tree[f"{meta}/tags/instance/{INDEX}"] = _listing(sorted(g.labels))
        for k, v in g.labels.items():
            tree[f"{meta}/tags/instance/{k}"] = v.encode()
    tree[f"{meta}/{INDEX}"] = _listing(sorted(leaves) + dirs)
    latest = ["meta-data/"]
    if g.user_data:
        tree["latest/user-data"] = g.user_data
        tree["openstack/latest/user_data"] = g.user_data
        latest.append("user-data")
    tree[f"latest/{INDEX}"] = _listing(latest)
    tree[INDEX] = b"latest"

    keys = {g.ssh_key_name: g.ssh_public_key} if g.ssh_public_key else {}
    meta_data = {
        "uuid": g.port_id, "name": g.hostname, "hostname": g.fqdn or g.hostname,
        "availability_zone": g.availability_zone, "launch_index": 0,
        "meta": dict(sorted(g.labels.items())), "public_keys": keys,
        "keys": [{"name": n, "type": "ssh", "data": k} for n, k in keys.items()],
    }
    network_data = {
        "links": [{"id": "tap0", "type": "phy", "ethernet_mac_address": g.mac}],
        "networks": [{"id": "network0", "link": "tap0", "type": "ipv4_dhcp",
                      "network_id": g.network_id}],
        "services": [],
    }
    tree["openstack/latest/meta_data.json"] = json.dumps(meta_data, sort_keys=True).encode()
    tree["openstack/latest/network_data.json"] = json.dumps(network_data,
                                                            sort_keys=True).encode()
    tree[f"openstack/latest/{INDEX}"] = _listing(
        ["meta_data.json", "network_data.json"] + (["user_data"] if g.user_data else []))
    tree[f"openstack/{INDEX}"] = b"latest"
    return tree


def tree_digest(tree: Tree) -> str:
    h = hashlib.sha256()
    for path in sorted(tree):
        h.update(path.encode() + b"\0" + len(tree[path]).to_bytes(4, "big") + tree[path])
    return h.hexdigest()[:32]
