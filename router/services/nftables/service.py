"""The router's packet filter and NAT: one nftables table, `inet cloudnet`.

The whole table is rendered into one file and loaded by one `nft -f`, which
the kernel applies as a single transaction: the file first creates the table
(a no-op if it exists), deletes it, then defines it in full, so the first
install and every later one are the same atomic replacement.

Edge rules (public IPs, port forwards, static NAT, firewall; see
``nft_edge``) are elements of maps and sets. When only elements changed
since the table this agent last loaded in the namespace, the change is
applied as element deletes and adds in one transaction, in-process through
libnftables (``router.lib.libnft``), checked first by a dry run: one rule costs
one element update whatever the number of rules. Anything else (and any
failure of the incremental path) reloads the whole table.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb

from router.errors import ApplyError, CheckError, ConfigError
from router.lib import files, libnft, proc, templating, validate
from router.services import Context
from router.services.nftables import acl as nft_acl
from router.services.nftables import compat as nft_compat
from router.services.nftables import edge as nft_edge
from router.services.nftables import vpn as nft_vpn

log = logging.getLogger(__name__)

NAME = "nftables"
TABLE_FAMILY, TABLE_NAME = "inet", "cloudnet"
RULESET = "cloudnet.nft"
# The table without its edge elements: equal skeletons allow an element delta.
SKELETON = "cloudnet.skeleton.nft"

# netns -> (skeleton, edge elements) of the table this agent last loaded there.
_loaded: dict[str, tuple[str, nft_edge.Elements]] = {}
# Edge elements of recently rendered rulesets (full text -> elements), so that
# check() and apply() need not rebuild them.
_memo: dict[str, nft_edge.Elements] = {}
_memo_lock = threading.Lock()
MEMO_SIZE = 8


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
    nft_edge.verify(cfg)
    nft_acl.verify(cfg)


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
    context: dict[str, Any] = dict(
        generator=f"{__name__} (router {cfg.router_id})",
        family=TABLE_FAMILY, table=TABLE_NAME, guest_ifaces=guests, public_ifaces=publics,
        guest_nets=guest_nets,
        # A guest reaching a public IP forwarded back into its own network
        # (hairpin) is seen from the gateway, so the reply returns through us.
        hairpins=[
            {"oif": i.name, "net": str(ipaddress.IPv4Interface(a).network),
             "gateway": str(ipaddress.IPv4Interface(a).ip)}
            for i in sorted(cfg.interfaces, key=lambda i: i.name)
            if i.role == pb.INTERFACE_ROLE_GUEST for a in i.addresses[:1]
        ],
        source_nats=[
            {"oif": oif, "source": src, "to": to, "network_id": net}
            for oif, src, to, net in snats
        ],
    )
    context.update(nft_acl.context(cfg))  # VPC: tier routing and network ACLs
    context.update(nft_vpn.context(cfg))
    # Element counters of established traffic need a kernel that looks maps
    # up as sets (not the appliance's 6.1): see router/services/nft_compat.py.
    context["map_counters"] = nft_compat.map_as_set_lookup()
    elements = nft_edge.elements(cfg)
    context["allow_sets"] = nft_edge.allow_sets(elements)
    skeleton = templating.render("nftables/cloudnet.nft.j2", edge_elements="", **context)
    adds = nft_edge.full_commands(TABLE_FAMILY, TABLE_NAME, elements)
    text = skeleton
    if adds:
        # The elements' text is built from verified values only (addresses,
        # numbers, protocol names, IDs): nothing a user typed reaches it raw.
        text = templating.render("nftables/cloudnet.nft.j2", edge_elements=adds, **context)
    with _memo_lock:
        if len(_memo) >= MEMO_SIZE:
            _memo.clear()
        _memo[text] = elements
    return {RULESET: text, SKELETON: skeleton}


def _elements(rendered: dict[str, str]) -> nft_edge.Elements | None:
    with _memo_lock:
        return _memo.get(rendered[RULESET])


def _delta(ctx: Context, rendered: dict[str, str]) -> tuple[str, nft_edge.Elements] | None:
    """The element commands from what is loaded to ``rendered``, when only
    elements differ (None: a full load is needed)."""
    loaded = _loaded.get(ctx.netns)
    new = _elements(rendered)
    if loaded is None or new is None or loaded[0] != rendered.get(SKELETON):
        return None
    if not _table_listed(ctx.netns):
        # Deleted behind our back (the agent's repair re-applies): load it whole.
        _loaded.pop(ctx.netns, None)
        return None
    return nft_edge.commands(TABLE_FAMILY, TABLE_NAME, loaded[1], new), new


def _table_listed(netns: str) -> bool:
    """Whether the table exists (in-process). Not by `list tables`: nft 1.0
    fetches every set's elements for it (0.6 s at 10,000 rules, under the
    router's lock); one small set, without its elements, costs the same at
    any size."""
    try:
        libnft.run(netns, f"list set {TABLE_FAMILY} {TABLE_NAME} edge_ips", terse=True)
    except libnft.NftError:
        return False
    return True


def check(ctx: Context, rendered: dict[str, str]) -> None:
    delta = _delta(ctx, rendered)
    if delta is not None:
        try:
            if delta[0]:
                libnft.run(ctx.netns, delta[0], dry_run=True)
            return
        except libnft.NftError as e:
            raise CheckError(f"nftables: element changes refused: {e}") from e
    # A full load: the kernel dry-runs the table without its edge elements
    # (every chain, rule, set and map type: what a template or a verify gap
    # could get wrong). The elements themselves are built from verified values
    # only, one per key, intervals cut disjoint (``nft_edge.elements``), so
    # the kernel has nothing left to refuse in them; checking them too would
    # parse every element twice (half of a full apply at 10,000 rules). If
    # it refused one anyway, the load is one transaction: the running table
    # stays as it was and the apply reports the error.
    try:
        libnft.run(ctx.netns, rendered[SKELETON], dry_run=True)
    except libnft.NftError as e:
        raise CheckError(f"nftables: table refused by the kernel's dry run: {e}") from e


def apply(
    ctx: Context, cfg: pb.RouterConfig, rendered: dict[str, str], previous: pb.RouterConfig | None
) -> None:
    path = ctx.path(RULESET)
    files.write_if_changed(path, rendered[RULESET])
    delta = _delta(ctx, rendered)
    if delta is not None:
        try:
            if delta[0]:
                libnft.run(ctx.netns, delta[0])
            _loaded[ctx.netns] = (rendered[SKELETON], delta[1])
            return
        except libnft.NftError as e:
            log.warning("router %s: element update failed, reloading the table: %s",
                        ctx.router_id, e)
    _loaded.pop(ctx.netns, None)
    try:
        # In-process, like `nft -f path` without the fork; one transaction.
        libnft.run(ctx.netns, rendered[RULESET])
    except libnft.NftError as e:
        raise ApplyError(f"nftables: loading the table failed: {e}") from e
    elements = _elements(rendered)
    if elements is not None:
        _loaded[ctx.netns] = (rendered[SKELETON], elements)


def loaded(netns: str) -> tuple[str, nft_edge.Elements] | None:
    """(skeleton, edge elements) of the table this agent last loaded in netns."""
    return _loaded.get(netns)


def set_loaded(netns: str, skeleton: str | None, elements: nft_edge.Elements | None = None
               ) -> None:
    """The table in netns now holds these elements (``router.services.nftables.delta`` keeps
    them current as it changes elements in place); None: unknown, the next
    apply loads the whole table."""
    if skeleton is None or elements is None:
        _loaded.pop(netns, None)
    else:
        _loaded[netns] = (skeleton, elements)


def table_present(netns: str) -> bool:
    # Table names only: listing the table itself would print every element.
    return _table_listed(netns)


def health(ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
    ok = table_present(ctx.netns)
    return pb.ServiceStatus(
        name=NAME, healthy=ok, version=proc.version("nft"),
        detail=f"table {TABLE_FAMILY} {TABLE_NAME} " + ("present" if ok else "missing"),
    )


def remove(ctx: Context, cfg: pb.RouterConfig | None) -> None:
    # The namespace goes away with the router, taking the table with it.
    _loaded.pop(ctx.netns, None)
    files.remove(os.path.join(ctx.state_dir, RULESET))
