"""The router's packet filter and NAT: one nftables table, `inet cloudnet`.

The whole table is rendered into one file and loaded by one `nft -f`, which
the kernel applies as a single transaction: the file first creates the table
(a no-op if it exists), deletes it, then defines it in full, so the first
install and every later one are the same atomic replacement.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile

from cloudnet.router.v1 import agent_pb2 as pb

from router import files, proc, templating, validate
from router.errors import ApplyError, CheckError, ConfigError
from router.services import Context

NAME = "nftables"
TABLE_FAMILY, TABLE_NAME = "inet", "cloudnet"
RULESET = "cloudnet.nft"


def verify(cfg: pb.RouterConfig) -> None:
    roles = {i.name: i for i in cfg.interfaces}
    for snat in cfg.source_nats:
        what = f"source NAT of network {snat.network_id!r}"
        kind_id = ("network", snat.network_id)
        validate.parse_ipv4_network(what, snat.source_cidr, *kind_id)
        public_ip = validate.parse_ipv4(what, snat.public_ip, *kind_id)
        iface = roles.get(snat.public_interface)
        if iface is None or iface.role != pb.INTERFACE_ROLE_PUBLIC:
            raise ConfigError(
                f"{what}: {snat.public_interface!r} is not a public interface of the router",
                *kind_id,
            )
        held = {ipaddress.IPv4Interface(a).ip for a in iface.addresses}
        if public_ip not in held:
            raise ConfigError(
                f"{what}: public IP {public_ip} is not an address of {iface.name}", *kind_id
            )


def render(cfg: pb.RouterConfig) -> dict[str, str]:
    guests = sorted(i.name for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_GUEST)
    publics = sorted(i.name for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_PUBLIC)
    guest_nets = sorted(
        {str(ipaddress.IPv4Interface(a).network)
         for i in cfg.interfaces if i.role == pb.INTERFACE_ROLE_GUEST for a in i.addresses}
    )
    snats = sorted(
        (s.public_interface, s.source_cidr, s.public_ip, s.network_id) for s in cfg.source_nats
    )
    text = templating.render(
        "nftables/cloudnet.nft.j2", generator=f"{__name__} (router {cfg.router_id})",
        family=TABLE_FAMILY, table=TABLE_NAME, guest_ifaces=guests, public_ifaces=publics,
        guest_nets=guest_nets,
        source_nats=[
            {"oif": oif, "source": src, "to": to, "network_id": net}
            for oif, src, to, net in snats
        ],
    )
    return {RULESET: text}


def check(ctx: Context, rendered: dict[str, str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".nft", prefix=".check-",
                                     dir=ctx.state_dir) as f:
        f.write(rendered[RULESET])
        f.flush()
        try:
            proc.run(["nft", "-c", "-f", f.name], netns=ctx.netns)
        except proc.CommandError as e:
            raise CheckError(f"nftables: ruleset refused by nft -c: {e.output.strip()}") from e


def apply(
    ctx: Context, cfg: pb.RouterConfig, rendered: dict[str, str], previous: pb.RouterConfig | None
) -> None:
    path = ctx.path(RULESET)
    files.write_if_changed(path, rendered[RULESET])
    try:
        proc.run(["nft", "-f", path], netns=ctx.netns)
    except proc.CommandError as e:
        raise ApplyError(f"nftables: nft -f failed: {e.output.strip()}") from e


def table_present(netns: str) -> bool:
    try:
        proc.run(["nft", "list", "table", TABLE_FAMILY, TABLE_NAME], netns=netns)
        return True
    except proc.CommandError:
        return False


def health(ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
    ok = table_present(ctx.netns)
    return pb.ServiceStatus(
        name=NAME, healthy=ok, version=proc.version("nft"),
        detail=f"table {TABLE_FAMILY} {TABLE_NAME} " + ("present" if ok else "missing"),
    )


def remove(ctx: Context, cfg: pb.RouterConfig | None) -> None:
    # The namespace goes away with the router, taking the table with it.
    files.remove(os.path.join(ctx.state_dir, RULESET))
