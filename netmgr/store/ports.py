"""Ports: a guest NIC on a network (MAC, IP, host name).

Every change bumps the network's router generation first: that is the port's
new ``generation`` (PENDING until the router applies it), and on PostgreSQL
the router row lock it takes serialises concurrent changes to one network,
so "lowest free IP" is read after the previous writer committed.
"""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from common.dhcp_options import DhcpOption
from common.grpc_errors import AlreadyExists, InvalidArgument
from netmgr.model import core as model
from netmgr.model.field_rules import requested_ip_problem
from netmgr.model.paging import Page, PageRequest
from netmgr.model.security_groups import check_address_pairs, check_group_ids
from netmgr.model.validation import (
    PortSpec,
    PortUpdate,
    check_port_spec,
    check_port_update,
    default_hostname,
)
from netmgr.store import dns, ipam, ipam6, quotas, rows, shared
from netmgr.store import security_groups as sg
from netmgr.store.base import Database, new_id
from netmgr.store.shared import TenantScope, of_tenant
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import MacRow, NetworkRow, PortRow
from netmgr.store.tables.keypairs import KeyPairRow


def port_row(s: Session, tenant_id: str, port_id: str, field: str = "id") -> PortRow:
    """The tenant's port (a load balancer member, a rule's target)."""
    return shared.owned(s, PortRow, tenant_id, port_id, "port", field)


def _port(s: Session, port_id: str) -> model.Port:
    return rows.port(s.execute(rows.port_select().where(PortRow.id == port_id)).one())


# Built once (a statement's cache key is computed once): every port create.
_HOSTNAME_TAKEN = select(PortRow.id).where(
    PortRow.network_id == bindparam("network_id"), PortRow.hostname == bindparam("hostname"),
    PortRow.id != bindparam("except_port"))
_INSERT_PORT = insert(PortRow)
_INSERT_MAC = insert(MacRow)


def _hostname_taken(s: Session, network_id: str, hostname: str, except_port: str = "") -> bool:
    # Core on the transaction's connection (no ORM statement): no row of
    # ports is pending in the session where this is asked.
    found = s.connection().scalar(_HOSTNAME_TAKEN, {
        "network_id": network_id, "hostname": hostname, "except_port": except_port})
    return found is not None


def _port_ip(s: Session, net: NetworkRow, requested: str) -> str:
    if not requested:
        return ipam.allocate_port_ip(s, net)
    problem = requested_ip_problem(requested, net.cidr, net.gateway)
    if problem is not None:
        raise InvalidArgument.one("port.ip", problem)
    if ipam.ip_in_use(s, net.id, requested):
        raise AlreadyExists("port.ip", f"{requested} is already in use in network {net.id}")
    sg.check_ip_against_pairs(s, net.id, requested)
    return requested


def _key_pair_id(s: Session, tenant_id: str, key_pair_id: str) -> str | None:
    """The tenant's key pair, checked; None for none."""
    if not key_pair_id:
        return None
    return shared.owned(s, KeyPairRow, tenant_id, key_pair_id, "key pair",
                        "port.ssh_key_pair_id").id


def _security_changes(s: Session, tenant_id: str, row: PortRow,
                      upd: PortUpdate) -> dict[str, object]:
    """The security columns an update changes, checked against the port as
    it will be (turning port security off needs its groups and pairs gone)."""
    port_security = row.port_security if upd.port_security is None else upd.port_security
    ids = (tuple(row.security_group_ids or ()) if upd.security_group_ids is None
           else upd.security_group_ids)
    current = tuple(model.AddressPair(p["ip"], p.get("mac", ""))
                    for p in row.allowed_address_pairs or ())
    pairs = current if upd.allowed_address_pairs is None else upd.allowed_address_pairs
    ids = check_group_ids(ids, port_security)
    pairs = check_address_pairs(pairs, port_security)
    sg.check_port_groups(s, tenant_id, ids)
    sg.check_pairs_against_ports(s, row.network_id, row.id, pairs)
    changes: dict[str, object] = {}
    if port_security != row.port_security:
        changes["port_security"] = port_security
    if list(ids) != list(row.security_group_ids or ()):
        changes["security_group_ids"] = list(ids)
    if pairs != current:
        changes["allowed_address_pairs"] = sg.pairs_json(pairs)
    if upd.binding_host is not None and upd.binding_host != row.binding_host:
        changes["binding_host"] = sg.check_binding_host(s, upd.binding_host)
    return changes


def dhcp_options_json(options: object) -> list[dict[str, object]]:
    """Checked options (the validation made them DhcpOptions) as stored."""
    assert isinstance(options, tuple)
    return [{"number": o.number, "type": o.type, "values": list(o.values)}
            for o in options if isinstance(o, DhcpOption)]


class PortStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_port(self, tenant_id: str, spec: PortSpec) -> model.Port:
        """Allocate the port's IP and MAC (or take the requested ones)."""
        spec = check_port_spec(spec)
        groups = check_group_ids(spec.security_group_ids, spec.port_security)
        pairs = check_address_pairs(spec.allowed_address_pairs, spec.port_security)

        def tx(s: Session) -> model.Port:
            net = shared.usable_network_row(s, tenant_id, spec.network_id, "port.network_id")
            if net.shared and not spec.port_security:
                raise InvalidArgument.one("port.port_security",
                                          "security groups are mandatory on a shared network")
            if not sg.has_default_group(s, tenant_id):
                sg.ensure_default_group(s, tenant_id)
            sg.check_port_groups(s, tenant_id, groups)
            sg.check_pairs_against_ports(s, net.id, "", pairs)
            router_id, generation, applied = shared.bump_router_of(s, net.id)
            ip = _port_ip(s, net, spec.ip)
            if spec.mac:
                if ipam.mac_in_use(s, spec.mac):
                    raise AlreadyExists("port.mac", f"MAC address {spec.mac} is already in use")
                mac = spec.mac
            else:
                mac = ipam.allocate_mac(s)
            hostname = spec.hostname
            checked = False  # hostname known free (of ports and records)
            if not hostname:
                hostname = default_hostname(spec.name, ip)
                if _hostname_taken(s, net.id, hostname) or \
                        dns.record_at_port_name(s, net.id, hostname):
                    # The port name is taken as a host name already: fall back
                    # to the IP-derived name (unique while the IP is).
                    hostname = default_hostname("", ip)
                else:
                    checked = True  # the same two queries again would say the same
            if not checked and _hostname_taken(s, net.id, hostname):
                raise AlreadyExists(
                    "port.hostname", f"host name {hostname!r} is already used in network {net.id}")
            if not checked and (held := dns.record_at_port_name(s, net.id, hostname)) is not None:
                raise AlreadyExists("port.hostname", held)
            now = utcnow()
            values = dict(
                id=new_id(), tenant_id=tenant_id, network_id=net.id, name=spec.name, mac=mac,
                ip=ip, hostname=hostname, device_id=spec.device_id, generation=generation,
                error="", created_at=now, updated_at=now, user_data=spec.user_data or None,
                labels=dict(spec.labels), metadata_tokens=spec.metadata_tokens or "optional",
                dhcp_options=dhcp_options_json(spec.dhcp_options),
                ssh_key_pair_id=_key_pair_id(s, tenant_id, spec.ssh_key_pair_id),
                security_group_ids=list(groups), port_security=spec.port_security,
                allowed_address_pairs=sg.pairs_json(pairs),
                binding_host=sg.check_binding_host(s, spec.binding_host),
                ipv6=ipam6.port_ipv6(s, net, mac, spec.ipv6))
            # Core inserts, not the ORM's unit of work (the hottest write of
            # the API): so the quota check the flush would run is run here.
            quotas.enforce(s, {(tenant_id, "ports"): 1})
            conn = s.connection()
            conn.execute(_INSERT_PORT, values)
            # Checked free above; the MAC's primary key guards a race (the
            # write is retried whole and the check then answers).
            conn.execute(_INSERT_MAC, {"mac": mac, "port_id": values["id"], "router_id": None})
            # What _port would read back, known already: no round trip.
            return rows.port((PortRow(**values), router_id, applied, net.domain))

        return self._db.write(tx)

    def get_port(self, tenant_id: str, port_id: str) -> model.Port:
        return self._db.read(lambda s: _port(s, port_row(s, tenant_id, port_id).id))

    def list_ports(self, tenant_id: TenantScope, page: PageRequest,
                   network_id: str = "") -> Page[model.Port]:
        """The tenant's ports, or only those of one of its networks."""

        def tx(s: Session) -> Page[model.Port]:
            stmt = of_tenant(rows.port_select(), PortRow.tenant_id, tenant_id)
            if network_id:
                net = shared.usable_network_row(s, tenant_id, network_id, "network_id")
                stmt = stmt.where(PortRow.network_id == net.id)
            return rows.paged(s, stmt, PortRow, page, rows.port)

        return self._db.read(tx)

    def update_port(self, tenant_id: str, port_id: str, upd: PortUpdate) -> model.Port:
        upd = check_port_update(upd)

        def tx(s: Session) -> model.Port:
            row = port_row(s, tenant_id, port_id, "port.id")
            changes: dict[str, object] = {
                f: v for f, v in (("name", upd.name), ("hostname", upd.hostname),
                                  ("device_id", upd.device_id))
                if v is not None and getattr(row, f) != v
            }
            if upd.user_data is not None and (row.user_data or b"") != upd.user_data:
                changes["user_data"] = upd.user_data or None
            if upd.dhcp_options is not None and \
                    (row.dhcp_options or []) != dhcp_options_json(upd.dhcp_options):
                changes["dhcp_options"] = dhcp_options_json(upd.dhcp_options)
            if upd.metadata_tokens is not None and row.metadata_tokens != upd.metadata_tokens:
                changes["metadata_tokens"] = upd.metadata_tokens
            if upd.labels is not None and dict(row.labels or {}) != dict(upd.labels):
                changes["labels"] = dict(upd.labels)
            if upd.port_security is False and s.scalar(select(NetworkRow.shared).where(
                    NetworkRow.id == row.network_id)):
                raise InvalidArgument.one("port.port_security",
                                          "security groups are mandatory on a shared network")
            if upd.ssh_key_pair_id is not None:
                key_id = _key_pair_id(s, tenant_id, upd.ssh_key_pair_id)
                if key_id != row.ssh_key_pair_id:
                    changes["ssh_key_pair_id"] = key_id
            changes.update(_security_changes(s, tenant_id, row, upd))
            if not changes:
                return _port(s, row.id)
            if "hostname" in changes and _hostname_taken(
                s, row.network_id, str(changes["hostname"]), except_port=row.id
            ):
                raise AlreadyExists(
                    "port.hostname",
                    f"host name {changes['hostname']!r} is already used in network "
                    f"{row.network_id}")
            if "hostname" in changes and (held := dns.record_at_port_name(
                    s, row.network_id, str(changes["hostname"]))) is not None:
                raise AlreadyExists("port.hostname", held)
            generation = shared.bump(s, shared.router_of(s, row.network_id))
            for f, v in changes.items():
                setattr(row, f, v)
            # A changed port is judged afresh by the router.
            row.generation, row.error, row.updated_at = generation, "", utcnow()
            s.flush()
            return _port(s, row.id)

        return self._db.write(tx)

    def delete_port(self, tenant_id: str, port_id: str) -> model.Port:
        """Delete a port (its MAC goes with it); returns what was deleted."""

        def tx(s: Session) -> model.Port:
            row = port_row(s, tenant_id, port_id)
            gone = _port(s, row.id)
            shared.bump(s, gone.router_id)
            s.delete(row)  # the MAC row goes by ON DELETE CASCADE
            return gone

        return self._db.write(tx)
