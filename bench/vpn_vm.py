"""Site-to-site VPN between two router VMs (kernel ESP), on the all-in-one
with the VM backend (TCG here: no KVM).

Two isolated networks, each router an appliance VM, a guest on each. In one
run:

* establishment through the API: CreateVpnConnection (the second side) to
  the connection's status ESTABLISHED as the API reports it (includes the
  push and the reconciler's status resync);
* iperf3 TCP guest A -> guest B through the tunnel (ESP between the VMs)
  vs the same two VMs in clear (guest A's router source-NATs, router B
  port-forwards 5201 to guest B): the ratio is the tunnel's cost.

Needs the router image (bash images/router/build.sh).

    .venv/bin/python bench/vpn_vm.py [--seconds 5] [--repeat 3] [--out bench/out]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cloudnet.netmgr.v1 import edge_pb2 as epb
from cloudnet.netmgr.v1 import edge_pb2_grpc as erpc
from cloudnet.netmgr.v1 import vpn_pb2 as vpb
from cloudnet.netmgr.v1 import vpn_pb2_grpc as vrpc

from aio.allinone import AllInOne
from tests.lib.allinone import Tenant, free_port

PSK = "bench-Tunnel.key_0123456789"


def iperf(guest: object, dst: str, seconds: int) -> float:
    r = guest.run(["iperf3", "-c", dst, "-t", str(seconds), "-J"],  # type: ignore[attr-defined]
                  timeout=seconds + 60)
    return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"])


def run(seconds: int, repeat: int) -> dict[str, object]:
    prefix = f"v{uuid.uuid4().hex[:6]}"
    aio = AllInOne(
        insecure=True, prefix=prefix, state_dir=tempfile.mkdtemp(prefix="cn-vpn-vm-bench-"),
                   listen=f"127.0.0.1:{free_port()}", health_interval=1.0,
                   router_backend="vm", compute_listen=f"127.0.0.1:{free_port()}")
    servers: list[subprocess.Popen[bytes]] = []
    aio.up()
    t = Tenant(aio, "bench")
    try:
        vpn = vrpc.VpnServiceStub(t.api.channel)
        a = t.network(name="site-a", cidr="10.41.0.0/24")
        b = t.network(name="site-b", cidr="10.42.0.0/24")
        pa, pb_ = t.port(a.id, hostname="va"), t.port(b.id, hostname="vb")
        for n in (a, b):
            r = t.api.wait_router_active(n.router_id, timeout=600)
            assert r.backend == "vm", r
        ga_guest, gb_guest = t.guest(a, pa), t.guest(b, pb_)
        ga_guest.dhcp()
        lb = gb_guest.dhcp()
        servers.append(gb_guest.popen(["iperf3", "-s"], stdout=subprocess.DEVNULL))
        # In clear: router B forwards its public IP's 5201 to guest B.
        ip = t.api.call(erpc.PublicIpServiceStub(t.api.channel).AllocatePublicIp,
                        epb.AllocatePublicIpRequest(network_id=b.id))
        pf = t.api.call(erpc.PortForwardServiceStub(t.api.channel).CreatePortForward,
                        epb.CreatePortForwardRequest(port_forward=epb.PortForward(
                            public_ip_id=ip.id, protocol="tcp", public_port=5201,
                            port_id=pb_.id, private_port=5201)))
        t.api.wait_router_active(b.router_id, timeout=120)
        time.sleep(1)
        clear = [iperf(ga_guest, ip.ip, seconds) for _ in range(repeat)]
        t.api.call(erpc.PortForwardServiceStub(t.api.channel).DeletePortForward,
                   epb.DeletePortForwardRequest(id=pf.id))

        gws = [t.api.call(vpn.CreateVpnGateway, vpb.CreateVpnGatewayRequest(
            vpn_gateway=vpb.VpnGateway(network_id=n.id))) for n in (a, b)]
        conns = []
        t0 = 0.0
        for mine, theirs, passive in ((gws[1], gws[0], True), (gws[0], gws[1], False)):
            cgw = t.api.call(vpn.CreateCustomerGateway, vpb.CreateCustomerGatewayRequest(
                customer_gateway=vpb.CustomerGateway(
                    name=f"to-{theirs.id[:8]}", peer_address=theirs.public_ip,
                    peer_cidrs=list(theirs.local_cidrs), psk=PSK,
                    ike_proposals=["aes256gcm16-prfsha384-ecp384"],
                    esp_proposals=["aes256gcm16-ecp384"])))
            t0 = time.monotonic()  # the active side, created last
            conns.append(t.api.call(vpn.CreateVpnConnection, vpb.CreateVpnConnectionRequest(
                vpn_connection=vpb.VpnConnection(vpn_gateway_id=mine.id,
                                                 customer_gateway_id=cgw.id, passive=passive))))
        while True:
            c = t.api.call(vpn.GetVpnConnection, vpb.GetVpnConnectionRequest(id=conns[1].id))
            if c.status.ike_state == "ESTABLISHED" and c.status.child_sas:
                break
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"tunnel not up: {c}")
            time.sleep(0.2)
        establish = time.monotonic() - t0
        backend = c.status.backend
        tunnel = [iperf(ga_guest, lb.ip, seconds) for _ in range(repeat)]
        c = t.api.call(vpn.GetVpnConnection, vpb.GetVpnConnectionRequest(id=conns[1].id))
        med_t, med_c = statistics.median(tunnel), statistics.median(clear)
        return {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "router_backend": "vm (TCG)", "ipsec_backend": backend,
            "establish_via_api_s": establish,
            "tunnel_bps": tunnel, "clear_bps": clear,
            "tunnel_median_bps": med_t, "clear_median_bps": med_c,
            "tunnel_vs_clear_ratio": med_t / med_c if med_c else 0.0,
            "tunnel_bytes_out": c.status.bytes_out,
        }
    finally:
        for p in servers:
            p.kill()
            p.wait()
        t.close()
        aio.down()


def plot(result: dict[str, Any], path: str) -> None:
    """Each iperf3 run, in clear and through the tunnel, with their medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    runs = [[b / 1e6 for b in result["clear_bps"]], [b / 1e6 for b in result["tunnel_bps"]]]
    ax.boxplot(runs)
    ax.set_xticks([1, 2], ["same VMs, clear", f"IPsec ({result['ipsec_backend']})"])
    ax.set_ylabel("iperf3 TCP Mbit/s")
    ax.set_title(f"two router VMs (TCG): ratio {result['tunnel_vs_clear_ratio']:.2f}, "
                 f"up in {result['establish_via_api_s']:.1f} s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    result = run(args.seconds, args.repeat)
    with open(os.path.join(args.out, "vpn_vm.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "vpn_vm.png"))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
