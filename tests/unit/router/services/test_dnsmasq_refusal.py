"""dnsmasq --test's refusals led back to the object whose line it refused
(the messages are dnsmasq 2.90's own), and a port's DHCP options left out
without the port."""

from __future__ import annotations

from cloudnet.router.v1 import agent_pb2 as pb
from cloudnet.router.v1 import metadata_pb2 as mpb

from router import objects
from router.services.dnsmasq import object_mark, refusal

CONF = "\n".join([
    "# Generated. Do not edit.",  # 1
    "domain=t.test,10.0.0.0/24",  # 2
    "",  # 3
    "# ---- per-port DHCP options",  # 4
    object_mark("dhcpoptions", "p1"),  # 5
    "dhcp-option-force=tag:net-g,tag:port-p1,42,10.0.0.5",  # 6
    'dhcp-option-force=tag:net-g,tag:port-p1,33,"hello"',  # 7
    "",  # 8
    "# ---- the tenant's DNS records",  # 9
    object_mark("dnsrecord", "r1"),  # 10
    "cname=a.t.test,b.t.test",  # 11
    object_mark("dnsrecord", "r2"),  # 12
    "cname=b.t.test,a.t.test",  # 13
])


def test_a_refused_line_names_the_object_it_belongs_to() -> None:
    for line, kind, object_id, why in (
            (7, "dhcpoptions", "p1", "bad IP address"),
            (6, "dhcpoptions", "p1", "bad IP address"),
            (13, "dnsrecord", "r2", "duplicate CNAME")):
        e = refusal(CONF, f"\ndnsmasq: {why} at line {line} of /state/.check-x1\n")
        assert (e.kind, e.object_id) == (kind, object_id)
        assert why in str(e)
        assert "/state" not in str(e)


def test_a_cname_loop_names_the_record_at_that_name() -> None:
    e = refusal(CONF, "\ndnsmasq: CNAME loop involving b.t.test\n")
    assert (e.kind, e.object_id) == ("dnsrecord", "r2")


def test_a_line_of_no_object_names_none() -> None:
    for output in ("dnsmasq: bad option at line 2 of /x", "dnsmasq: bad option at line 99 of /x",
                   "dnsmasq: CNAME loop involving z.t.test", "dnsmasq: something else"):
        e = refusal(CONF, output)
        assert (e.kind, e.object_id) == ("", ""), output


def test_a_ports_options_are_left_out_or_kept_as_they_were() -> None:
    def cfg(*options: mpb.DhcpHostOption) -> pb.RouterConfig:
        return pb.RouterConfig(guest_networks=[pb.GuestNetwork(network_id="n", hosts=[
            pb.DhcpHost(port_id="p1", ip="10.0.0.5", options=list(options)),
            pb.DhcpHost(port_id="p2", ip="10.0.0.6",
                        options=[mpb.DhcpHostOption(number=42, values=["10.0.0.1"])])])])

    old = mpb.DhcpHostOption(number=42, type="ips", values=["10.0.0.7"])
    new = mpb.DhcpHostOption(number=33, type="string", values=["hello"])
    oid = (objects.DHCP_OPTIONS, "p1")
    first = objects.leave_out(cfg(new), None, oid)
    assert first is not None
    hosts = first.guest_networks[0].hosts
    assert [(h.port_id, len(h.options)) for h in hosts] == [("p1", 0), ("p2", 1)]
    kept = objects.leave_out(cfg(new), cfg(old), oid)
    assert kept is not None
    assert list(kept.guest_networks[0].hosts[0].options) == [old]
    assert objects.leave_out(cfg(), None, oid) is None  # no options: nothing to leave out


def test_a_route_to_metadata_goes_with_another_gateway_or_own_routes() -> None:
    from router.services.dnsmasq import with_metadata_route

    gw, md = "10.0.0.1", "169.254.169.254/32,10.0.0.1"

    def routes(*options: mpb.DhcpHostOption) -> list[str] | None:
        out = with_metadata_route(pb.DhcpHost(port_id="p", options=list(options)), gw)
        return next((list(o.values) for o in out if o.number == 121), None)

    def opt(number: int, type_: str, *values: str) -> mpb.DhcpHostOption:
        return mpb.DhcpHostOption(number=number, type=type_, values=list(values))

    assert routes() is None
    assert routes(opt(42, "ips", "10.0.0.5")) is None
    assert routes(opt(3, "ips", gw)) is None  # the router is the gateway anyway
    assert routes(opt(3, "ips", "10.0.0.99")) == [md, "0.0.0.0/0,10.0.0.99"]
    assert routes(opt(121, "routes", "10.9.0.0/16,10.0.0.7")) == ["10.9.0.0/16,10.0.0.7", md]
    # Their default route is the router: the metadata server is reached.
    assert routes(opt(121, "routes", "10.9.0.0/16,10.0.0.7", f"0.0.0.0/0,{gw}")) == [
        "10.9.0.0/16,10.0.0.7", f"0.0.0.0/0,{gw}"]
    assert routes(opt(121, "routes", "0.0.0.0/0,10.0.0.7")) == ["0.0.0.0/0,10.0.0.7", md]
    assert routes(opt(121, "routes", "169.254.0.0/16,10.0.0.7", f"0.0.0.0/0,{gw}")) == [
        "169.254.0.0/16,10.0.0.7", f"0.0.0.0/0,{gw}", md]
    own = "169.254.169.254/32,10.0.0.8"
    assert routes(opt(121, "routes", own)) == [own]  # the port's own choice stands
    full = [f"10.{i}.0.0/16,10.0.0.7" for i in range(16)]  # 16 routes: the most an option takes
    assert routes(opt(121, "routes", *full[:16])) == full[:16]
