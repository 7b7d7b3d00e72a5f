"""The basic zone's router: the admin puts a network on a provider VLAN for
two tenants; each tenant's guest gets its own port's lease from the shared
network's router (busybox udhcpc), resolves its own name through the
router's DNS (dig) and reads its own metadata, not the other tenant's
(curl to 169.254.169.254); a tenant's elastic IP (static NAT on the shared
network's router) reaches its guest from outside, and only its guest."""

from __future__ import annotations

import pytest
from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb

from aio.allinone import INET_HOST_IP
from aio.demo import Api
from tests.lib.edge import Edge
from tests.lib.guest_servers import TCP, ask, serve

pytestmark = pytest.mark.integration

MD = "http://169.254.169.254"
PROVIDER_VLAN = 3000


def curl(guest, url: str) -> tuple[int, str]:
    r = guest.run(["curl", "-s", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}", url])
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def dig(guest, name: str) -> list[str]:
    out = guest.run(["dig", "+short", "+time=2", "+tries=2", name]).stdout
    return [line for line in out.split() if line]


def test_two_tenants_guests_are_served_by_the_shared_networks_router(cloud, make_tenant,
                                                                     servers):
    provider, acme, globex = make_tenant(), make_tenant(), make_tenant()
    as_provider = Api(cloud.listen, cloud.admin_token, tenant=provider.tenant.id,
                      tls=cloud.client_tls)
    try:
        net = as_provider.call(as_provider.networks.CreateNetwork, pb.CreateNetworkRequest(
            network=pb.Network(name="basic", cidr="172.20.0.0/24", shared=True,
                               provider_vlan=PROVIDER_VLAN,
                               shared_tenant_ids=[acme.tenant.id, globex.tenant.id])))
        assert (net.shared, net.vlan_id) == (True, PROVIDER_VLAN)
        pa = acme.port(net.id, hostname="web", user_data=b"#!/bin/sh\necho acme\n")
        pg = globex.port(net.id, hostname="db", user_data=b"#!/bin/sh\necho globex\n")
        as_provider.wait_router_active(net.router_id)  # the owner's router
        ga, gg = acme.guest(net, pa), globex.guest(net, pg)
        assert ga.dhcp().ip == pa.ip
        assert gg.dhcp().ip == pg.ip
        assert dig(ga, f"web.{net.domain}") == [pa.ip]
        assert dig(gg, f"db.{net.domain}") == [pg.ip]
        assert curl(ga, f"{MD}/latest/meta-data/instance-id") == (200, pa.id)
        assert curl(gg, f"{MD}/latest/meta-data/instance-id") == (200, pg.id)
        assert curl(ga, f"{MD}/latest/user-data") == (200, "#!/bin/sh\necho acme\n")
        assert curl(gg, f"{MD}/latest/user-data") == (200, "#!/bin/sh\necho globex\n")
        # An elastic IP: the tenant's public IP, static NAT to its port.
        serve(servers, ga, TCP, 8080, "acme")
        serve(servers, gg, TCP, 8080, "globex")
        e = Edge(acme)
        eip = e.public_ip(net.id)
        nat = e.static_nat(eip.id, pa.id)
        rule = e.rule(direction=epb.FIREWALL_DIRECTION_INGRESS, public_ip_id=eip.id,
                      protocol=TCP, port=8080, cidrs=[f"{INET_HOST_IP}/32"])
        e.wait_active(e.nats.GetStaticNat, epb.GetStaticNatRequest(id=nat.id))
        e.wait_active(e.firewall.GetFirewallRule, epb.GetFirewallRuleRequest(id=rule.id))
        assert ask(cloud.inet_ns, TCP, eip.ip, 8080) == "acme"
        assert ask(cloud.inet_ns, TCP, net.source_nat_ip, 8080, timeout=1) == "", \
            "the network's own address forwards nothing"
    finally:
        as_provider.close()
