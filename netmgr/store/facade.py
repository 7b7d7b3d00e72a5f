"""The network manager's store: one object composed of repositories, one
transaction per API call, model objects out.

Each repository (tenants, zone, networks, ports, routers, public IPs, edge
rules, load balancers, the router's view of the edge, ACLs, routes, VPCs,
VPN, hosts) holds the one ``Database`` and nothing of the others; what they
share inside a transaction is in ``shared``. ``Store`` builds them, and
offers their calls under the names callers use (``store.create_port`` is
``store.ports.create_port``).

Every tenant-facing call takes the caller's tenant ID and treats another
tenant's object exactly like a missing one (NotFound), so existence never
leaks. Every change to what a router serves (networks, ports, rules) bumps
the router's ``desired_generation`` in the same transaction, and the changed
object records that generation: the API derives PENDING/ACTIVE from it.
"""

from __future__ import annotations

from collections.abc import Collection

from netmgr.model import core as model
from netmgr.store import router_vms
from netmgr.store.acls import AclStore
from netmgr.store.base import DEFAULT_ZONE, Database
from netmgr.store.dns import DnsStore
from netmgr.store.edge import EdgeStore
from netmgr.store.edge_router_view import EdgeRouterStore
from netmgr.store.events import EventStore
from netmgr.store.hosts import HostStore
from netmgr.store.keypairs import KeyPairStore
from netmgr.store.load_balancers import LoadBalancerStore
from netmgr.store.networks import NetworkStore
from netmgr.store.ports import PortStore
from netmgr.store.public_ips import PublicIpStore
from netmgr.store.quotas import QuotaStore
from netmgr.store.redundancy import RedundancyStore
from netmgr.store.routers import RouterStore
from netmgr.store.routes import RouteStore
from netmgr.store.secrets import SecretBox, SecretsKeyMismatch
from netmgr.store.security_groups import SecurityGroupStore
from netmgr.store.shared import RouterPlacement
from netmgr.store.tenants import TenantStore
from netmgr.store.vpcs import VpcStore
from netmgr.store.vpn import VpnStore
from netmgr.store.zone import ZoneStore


class Store:
    def __init__(
        self,
        url: str,
        *,
        zone_defaults: model.Zone = DEFAULT_ZONE,
        default_host: str = "local",
        pool_size: int = 16,
        secrets: SecretBox | None = None,
    ) -> None:
        """``secrets``: the key sealing secrets at rest (the server's key file,
        ``netmgr.store.secrets``); SecretsKeyMismatch when the database was
        sealed with another."""
        self.db = Database(url, pool_size=pool_size, secrets=secrets)
        self._placement = RouterPlacement(host=default_host)
        self.tenants = TenantStore(self.db)
        self.zone = ZoneStore(self.db)
        self.vpcs = VpcStore(self.db, self._placement)
        self.networks = NetworkStore(self.db, self._placement, self.vpcs)
        self.ports = PortStore(self.db)
        self.routers = RouterStore(self.db)
        self.public_ips = PublicIpStore(self.db)
        self.edge = EdgeStore(self.db)
        self.load_balancers = LoadBalancerStore(self.db)
        self.edge_router = EdgeRouterStore(self.db)
        self.acls = AclStore(self.db)
        self.routes = RouteStore(self.db)
        self.vpn = VpnStore(self.db)
        self.hosts = HostStore(self.db)
        self.key_pairs = KeyPairStore(self.db)
        self.quotas = QuotaStore(self.db)
        self.events = EventStore(self.db)
        self.security_groups = SecurityGroupStore(self.db)
        self.dns = DnsStore(self.db)
        self.redundancy = RedundancyStore(self.db)
        self.zone.ensure(zone_defaults)
        try:
            self.vpn.check_secrets_key()
        except SecretsKeyMismatch:
            self.db.close()
            raise

        # The repositories' calls, as callers name them.
        self.create_tenant = self.tenants.create_tenant
        self.get_tenant = self.tenants.get_tenant
        self.list_tenants = self.tenants.list_tenants
        self.delete_tenant = self.tenants.delete_tenant
        self.create_token = self.tenants.create_token
        self.list_tokens = self.tenants.list_tokens
        self.delete_token = self.tenants.delete_token
        self.token_for_secret = self.tenants.token_for_secret

        self.get_zone = self.zone.get_zone
        self.update_zone = self.zone.update_zone

        self.create_network = self.networks.create_network
        self.get_network = self.networks.get_network
        self.list_networks = self.networks.list_networks
        self.update_network = self.networks.update_network
        self.delete_network = self.networks.delete_network
        self.router_of_network = self.networks.router_of_network
        self.network_cidr = self.networks.network_cidr

        self.create_port = self.ports.create_port
        self.get_port = self.ports.get_port
        self.list_ports = self.ports.list_ports
        self.update_port = self.ports.update_port
        self.delete_port = self.ports.delete_port

        self.import_key_pair = self.key_pairs.import_key_pair
        self.get_key_pair = self.key_pairs.get_key_pair
        self.list_key_pairs = self.key_pairs.list_key_pairs
        self.delete_key_pair = self.key_pairs.delete_key_pair

        self.get_router = self.routers.get_router
        self.restart_router = self.routers.restart_router
        self.list_routers = self.routers.list_routers
        self.list_routers_all = self.routers.list_routers_all
        self.placed_routers = self.routers.placed_routers
        self.routers_behind = self.routers.routers_behind
        self.router_snapshot = self.routers.router_snapshot
        self.router_head = self.routers.router_head
        self.guest_metadata_parts = self.routers.guest_metadata_parts
        self.record_router_status = self.routers.record_router_status
        self.record_router_statuses = self.routers.record_router_statuses
        self.record_edge_delta_applied = self.routers.record_edge_delta_applied
        self.mark_router_unreachable = self.routers.mark_router_unreachable
        self.mark_routers_unreachable = self.routers.mark_routers_unreachable

        self.allocate_public_ip = self.public_ips.allocate_public_ip
        self.get_public_ip = self.public_ips.get_public_ip
        self.list_public_ips = self.public_ips.list_public_ips
        self.associate_public_ip = self.public_ips.associate_public_ip
        self.release_public_ip = self.public_ips.release_public_ip

        self.create_static_nat = self.edge.create_static_nat
        self.get_static_nat = self.edge.get_static_nat
        self.list_static_nats = self.edge.list_static_nats
        self.delete_static_nat = self.edge.delete_static_nat
        self.create_port_forward = self.edge.create_port_forward
        self.update_port_forward = self.edge.update_port_forward
        self.get_port_forward = self.edge.get_port_forward
        self.list_port_forwards = self.edge.list_port_forwards
        self.delete_port_forward = self.edge.delete_port_forward
        self.create_firewall_rule = self.edge.create_firewall_rule
        self.update_firewall_rule = self.edge.update_firewall_rule
        self.get_firewall_rule = self.edge.get_firewall_rule
        self.list_firewall_rules = self.edge.list_firewall_rules
        self.delete_firewall_rule = self.edge.delete_firewall_rule
        self.get_egress_policy = self.edge.get_egress_policy
        self.set_egress_policy = self.edge.set_egress_policy

        self.create_load_balancer = self.load_balancers.create_load_balancer
        self.update_load_balancer = self.load_balancers.update_load_balancer
        self.get_load_balancer = self.load_balancers.get_load_balancer
        self.list_load_balancers = self.load_balancers.list_load_balancers
        self.delete_load_balancer = self.load_balancers.delete_load_balancer

        self.edge_rule_kinds = self.edge_router.edge_rule_kinds
        self.record_edge_status = self.edge_router.record_edge_status
        self.record_edge_statuses = self.edge_router.record_edge_statuses

        self.create_network_acl = self.acls.create_network_acl
        self.get_network_acl = self.acls.get_network_acl
        self.list_network_acls = self.acls.list_network_acls
        self.delete_network_acl = self.acls.delete_network_acl
        self.replace_network_acl = self.acls.replace_network_acl
        self.acl_counter_targets = self.acls.acl_counter_targets
        self.create_acl_rule = self.acls.create_acl_rule
        self.get_acl_rule = self.acls.get_acl_rule
        self.list_acl_rules = self.acls.list_acl_rules
        self.update_acl_rule = self.acls.update_acl_rule
        self.delete_acl_rule = self.acls.delete_acl_rule

        self.create_static_route = self.routes.create_static_route
        self.get_static_route = self.routes.get_static_route
        self.list_static_routes = self.routes.list_static_routes
        self.delete_static_route = self.routes.delete_static_route
        self.create_private_gateway = self.routes.create_private_gateway
        self.get_private_gateway = self.routes.get_private_gateway
        self.list_private_gateways = self.routes.list_private_gateways
        self.delete_private_gateway = self.routes.delete_private_gateway

        self.create_vpc = self.vpcs.create_vpc
        self.get_vpc = self.vpcs.get_vpc
        self.list_vpcs = self.vpcs.list_vpcs
        self.update_vpc = self.vpcs.update_vpc
        self.delete_vpc = self.vpcs.delete_vpc

    @property
    def default_host(self) -> str:
        """The host of new namespace routers."""
        return self._placement.host

    @property
    def default_backend(self) -> model.RouterBackend:
        """The backend of new routers (``netmgr.server`` sets it from
        --router-backend)."""
        return self._placement.backend

    @default_backend.setter
    def default_backend(self, backend: model.RouterBackend) -> None:
        self._placement.backend = backend

    def router_vms_of(self, router_ids: Collection[str]) -> dict[str, router_vms.RouterVm]:
        """The VM rows of these routers (those of the VM backend that have one)."""
        return router_vms.read_router_vms(self.db, router_ids)

    def close(self) -> None:
        self.db.close()
