"""The router's packet filter and NAT: one nftables table, `inet cloudnet`.

The whole table is rendered into one file and loaded by one `nft -f`, which
the kernel applies as a single transaction: the file first creates the table
(a no-op if it exists), deletes it, then defines it in full, so the first
install and every later one are the same atomic replacement.

Edge rules (public IPs, port forwards, static NAT, firewall; see
``edge``) are elements of maps and sets. When only elements changed
since the table this agent last loaded in the namespace, the change is
applied as element deletes and adds in one transaction, in-process through
libnftables (``router.lib.libnft``), checked first by a dry run: one rule costs
one element update whatever the number of rules. Anything else (and any
failure of the incremental path) reloads the whole table.

Edge deltas (``delta``) change the loaded table's elements in place between
full applies; ``NftablesService`` offers them as its ``edge_rules``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

from cloudnet.router.v1 import agent_pb2 as pb

from router.errors import ApplyError, CheckError, ConfigError
from router.lib import files, libnft, proc, templating, validate
from router.services.base import (
    Capabilities,
    Context,
    HostFeatures,
    Rendered,
    RouterPaths,
    vpn_tun,
)
from router.services.nftables import acl as nft_acl
from router.services.nftables import edge as nft_edge
from router.services.nftables import metadata as nft_metadata
from router.services.nftables import port_security, table
from router.services.nftables import routed as nft_routed
from router.services.nftables import vpn as nft_vpn
from router.services.nftables.delta import EdgeDeltas
from router.services.nftables.table import TableState

log = logging.getLogger(__name__)

TABLE_FAMILY, TABLE_NAME = table.FAMILY, table.NAME
RULESET = "cloudnet.nft"
# The table without its edge elements: equal skeletons allow an element delta.
SKELETON = "cloudnet.skeleton.nft"
# Renderings whose edge elements are kept (full text -> elements), so that
# check() and apply() need not rebuild them.
MEMO_SIZE = 2
# The packet mark edge_ingress sets on a new packet to a source-NAT address
# that no allow rule took: a forward or a load balancer of that address then
# drops it (its other traffic passes as before).
SNAT_UNFILTERED = 0x636E0001


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
    nft_routed.verify(cfg)
    port_security.verify(cfg)


def render(cfg: pb.RouterConfig, map_counters: bool,
           tun: str, conntrack_limit: int = 0) -> tuple[Rendered, nft_edge.Elements]:
    """The table (``RULESET``, and ``SKELETON`` without edge elements) and its
    edge elements. ``map_counters``: the kernel looks maps up as sets
    (``compat``); ``tun``: the device libipsec decrypts into, if any;
    ``conntrack_limit``: connections the router may track (0: no limit)."""
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
        source_nat_ips=sorted({to for _, _, to, _ in snats}),
        snat_unfiltered=SNAT_UNFILTERED,
    )
    context.update(nft_acl.context(cfg))  # VPC: tier routing and network ACLs
    context.update(nft_vpn.context(cfg, tun))
    context.update(nft_routed.context(cfg))  # IPv6 and routed guests, their ingress
    context.update(nft_metadata.context(cfg))  # who may ask the metadata service
    # Element counters of established traffic need a kernel that looks maps
    # up as sets (not the appliance's 6.1): see compat.py.
    context["map_counters"] = map_counters
    context["conntrack_limit"] = conntrack_shares(conntrack_limit)
    # A redundant router's link to its other instance: VRRP and conntrackd.
    context["sync_iface"] = cfg.redundancy.sync_interface if cfg.HasField("redundancy") else ""
    elements = nft_edge.elements(cfg)
    context["allow_sets"] = nft_edge.allow_sets(elements)
    # A port is an element too: a port change stays an element update.
    elements.update(port_security.elements(cfg))
    skeleton = templating.render("nftables/cloudnet.nft.j2", edge_elements="", **context)
    adds = nft_edge.full_commands(TABLE_FAMILY, TABLE_NAME, elements, port_security.SET_TABLES)
    text = skeleton
    if adds:
        # The elements' text is built from verified values only (addresses,
        # numbers, protocol names, IDs): nothing a user typed reaches it raw.
        text = templating.render("nftables/cloudnet.nft.j2", edge_elements=adds, **context)
    return {RULESET: text, SKELETON: skeleton}, elements


# Connections counted per share of a router's limit: ``ct count`` walks the
# whole list of its count for every new connection (measured: 0.26 ms with
# 65,536 in one list, under 0.05 ms in shares of 64).
CONNTRACK_SHARE = 64
CONNTRACK_MAX_SHARES = 4096


def conntrack_shares(limit: int) -> dict[str, int] | None:
    """A router's conntrack limit as shares of at most CONNTRACK_SHARE
    connections each, by a hash of the connection (None: no limit)."""
    if limit <= 0:
        return None
    shares = min(CONNTRACK_MAX_SHARES, max(1, limit // CONNTRACK_SHARE))
    return {"shares": shares, "per_share": max(1, limit // shares)}


class NftablesService:
    """``base.Service`` of one router's table; its edge deltas are its ``edge_rules``."""

    name = "nftables"

    def __init__(self, host: HostFeatures) -> None:
        self.host = host
        self.table = TableState()
        self.deltas = EdgeDeltas(self.table)
        self.capabilities = Capabilities(edge_rules=self.deltas, adopts=self)
        self._memo: dict[str, nft_edge.Elements] = {}
        # What the health check found wrong with the table (cleared by the
        # load that repairs it), and how often a load repaired it.
        self._drift = ""
        self.repairs = 0
        self.last_repair = ""

    def verify(self, cfg: pb.RouterConfig) -> None:
        verify(cfg)

    def render(self, cfg: pb.RouterConfig, paths: RouterPaths) -> Rendered:
        tun = vpn_tun(self.host) if cfg.vpn_connections else ""
        rendered, elements = render(cfg, self.host.nft_map_as_set_lookup(), tun,
                                    self.host.router_conntrack_limit())
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[rendered[RULESET]] = elements
        return rendered

    def _elements(self, rendered: Rendered) -> nft_edge.Elements | None:
        return self._memo.get(rendered[RULESET])

    def _delta(self, ctx: Context, rendered: Rendered) -> tuple[str, nft_edge.Elements] | None:
        """The element commands from what is loaded to ``rendered``, when only
        elements differ (None: a full load is needed)."""
        loaded = self.table.loaded
        new = self._elements(rendered)
        if loaded is None or new is None or loaded.skeleton != rendered.get(SKELETON):
            return None
        if not table.listed(ctx.netns):
            # Deleted behind our back (the agent's repair re-applies): load it whole.
            self.table.loaded = None
            return None
        return nft_edge.commands(TABLE_FAMILY, TABLE_NAME, loaded.elements, new,
                                 port_security.SET_TABLES), new

    def check(self, ctx: Context, rendered: Rendered) -> None:
        delta = self._delta(ctx, rendered)
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

    def apply(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered,
              previous: pb.RouterConfig | None) -> None:
        files.write_if_changed(ctx.paths.nft_ruleset, rendered[RULESET])
        delta = self._delta(ctx, rendered)
        if delta is not None:
            try:
                if delta[0]:
                    libnft.run(ctx.netns, delta[0])
                self.table.loaded = table.Loaded(rendered[SKELETON], delta[1])
                return
            except libnft.NftError as e:
                log.warning("router %s: element update failed, reloading the table: %s",
                            ctx.router_id, e)
        self.table.forget()
        try:
            # In-process, like `nft -f path` without the fork; one transaction.
            libnft.run(ctx.netns, rendered[RULESET])
        except libnft.NftError as e:
            raise ApplyError(f"nftables: loading the table failed: {e}") from e
        self.table.generation, self.table.shape = table.shape(ctx.netns)
        elements = self._elements(rendered)
        if elements is not None:
            self.table.loaded = table.Loaded(rendered[SKELETON], elements)
        if self._drift:
            self.repairs += 1
            self.last_repair = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: " \
                               f"{self._drift}"
            log.warning("router %s: table loaded again (%s)", ctx.router_id, self._drift)
            self._drift = ""

    def adopt(self, ctx: Context, cfg: pb.RouterConfig, rendered: Rendered) -> None:
        """The table a previous agent loaded is this rendering: the next
        change is an element update, not a reload."""
        elements = self._elements(rendered)
        if elements is not None:
            self.table.loaded = table.Loaded(rendered[SKELETON], elements)

    def forget_loaded(self) -> None:
        """Whatever is loaded, the next apply loads the whole table (as after an agent start)."""
        self.table.forget()

    def health(self, ctx: Context, cfg: pb.RouterConfig) -> pb.ServiceStatus:
        """Whether the table is the one this agent loaded: its fingerprint
        (``table.shape``) as right after the load. A table changed behind the
        agent's back (flushed, a rule or chain deleted, deleted whole) is
        unhealthy, and the next apply (the agent's repair) loads it whole."""
        expected = self.table.shape
        try:
            now = self._shape_now(ctx) if expected is not None else None
            listed = expected is not None or table.listed(ctx.netns)
        except FileNotFoundError:  # the router's namespace is gone: the repair makes it
            now, listed = None, False
        if expected is None:
            drift = "" if listed else "missing"
        elif now is None:
            drift = "missing"
        elif now != expected:
            drift = "differs from what the agent loaded (rules or chains changed)"
        else:
            drift = ""
        what = f"table {TABLE_FAMILY} {TABLE_NAME}"
        if drift:
            self._drift = f"{what} {drift}"
            self.table.loaded = None  # not what it holds: the repair loads it whole
            detail = self._drift
        else:
            detail = f"{what} as loaded" if expected is not None else f"{what} present"
        if self.repairs:
            detail += (f"; repaired {self.repairs} time{'s' if self.repairs > 1 else ''}, "
                       f"last {self.last_repair}")
        return pb.ServiceStatus(name=self.name, healthy=not drift, version=proc.version("nft"),
                                detail=detail)

    def _shape_now(self, ctx: Context) -> str | None:
        """The table's shape now: the one known while the namespace's ruleset
        generation has not moved since it was read (every 5 s for every
        router, the dumps were a large part of an idle agent's work)."""
        known = self.table.generation
        if known is not None and table.generation(ctx.netns) == known:
            return self.table.shape
        generation, now = table.shape(ctx.netns)
        if now is not None and now == self.table.shape:
            self.table.generation = generation
        return now

    def remove(self, ctx: Context, cfg: pb.RouterConfig | None, keep_leases: bool) -> None:
        # The namespace goes away with the router, taking the table with it.
        self.table.forget()
        self.deltas.forget()
        files.remove(ctx.paths.nft_ruleset)
