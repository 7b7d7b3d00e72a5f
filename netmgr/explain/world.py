"""A tenant's networks and routers as explain reads them, loaded once per
request and each router at most once."""

from __future__ import annotations

from typing import Any

from netmgr.explain.router_view import IPv4, RouterView, Tunnel, in_any, net
from netmgr.model import core as model
from netmgr.model.paging import MAX_PAGE_SIZE, PageRequest, decode_token
from netmgr.model.vpn import VpnConnection
from netmgr.store.facade import Store


def _all(list_page: Any) -> list[Any]:
    out: list[Any] = []
    page = PageRequest(size=MAX_PAGE_SIZE)
    while True:
        got = list_page(page)
        out.extend(got.items)
        if not got.next_page_token:
            return out
        page = PageRequest(size=MAX_PAGE_SIZE, after=decode_token(got.next_page_token))


class World:
    def __init__(self, store: Store, tenant_id: str) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.networks: list[model.Network] = _all(
            lambda p: store.list_networks(tenant_id, p))
        self._routers: dict[str, RouterView] = {}
        self._vpn: dict[str, VpnConnection] | None = None

    def _connections(self) -> dict[str, VpnConnection]:
        """VPN connection ID -> the connection (with the SA state its router last reported)."""
        if self._vpn is None:
            conns = _all(lambda p: self.store.vpn.list_connections(self.tenant_id, p))
            self._vpn = {c.id: c for c in conns}
        return self._vpn

    def router(self, router_id: str) -> RouterView:
        if router_id not in self._routers:
            snap = self.store.router_snapshot(router_id)
            conns = self._connections() if snap.vpn else {}
            tunnels = [Tunnel(t, conns[t.connection_id].sa_status, conns[t.connection_id].error)
                       if t.connection_id in conns else Tunnel(t, {}) for t in snap.vpn]
            self._routers[router_id] = RouterView(snap, tunnels)
        return self._routers[router_id]

    def routers(self) -> list[RouterView]:
        ids = sorted({n.router_id for n in self.networks if n.router_id})
        return [self.router(i) for i in ids]

    def errors(self) -> dict[tuple[str, str], str]:
        """Objects in ERROR on the routers read so far: (kind, ID) -> why."""
        out: dict[tuple[str, str], str] = {}
        for rv in self._routers.values():
            out.update(rv.errors())
        return out

    def source_network(self, ip: IPv4) -> model.Network | None:
        """The network an address sends from: of several holding it (isolated
        networks may share a CIDR), one where a port has it."""
        nets = [n for n in self.networks if ip in net(n.cidr)]
        for n in nets if len(nets) > 1 else ():
            if n.router_id and self.router(n.router_id).port_at(n.id, ip) is not None:
                return n
        return nets[0] if nets else None

    def network_of(self, ip: IPv4) -> model.Network | None:
        return next((n for n in self.networks if ip in net(n.cidr)), None)

    def holder_of(self, ip: IPv4) -> RouterView | None:
        """The router one of whose public addresses ``ip`` is."""
        text = str(ip)
        for n in self.networks:
            if n.source_nat_ip == text and n.router_id:
                return self.router(n.router_id)
        return next((rv for rv in self.routers() if text in rv.edge_ips), None)

    def behind(self, ip: IPv4) -> tuple[RouterView, str, str] | None:
        """A VPC router reaching ``ip`` through a private gateway or a static
        route: (router, kind, ID) of what ``ip`` is behind."""
        for rv in self.routers():
            if rv.vpc is None:
                continue
            g = rv.gateway_of(ip)
            if g is not None:
                return rv, "privategateway", g.id
            for r in rv.vpc.routes:
                if r.via_id and ip in net(r.cidr):
                    return rv, "staticroute", r.id
        return None

    def tunnel_from(self, ip: IPv4) -> tuple[RouterView, Tunnel] | None:
        """A router with a VPN connection whose peer networks hold ``ip``."""
        for rv in self.routers():
            for t in sorted(rv.tunnels, key=lambda t: t.spec.connection_id):
                if in_any(ip, t.spec.peer_cidrs):
                    return rv, t
        return None
