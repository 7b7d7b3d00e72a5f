"""What one security group rule change costs the kernel's commit on the
Linux-bridge fabric, by design, at N ports on the host: the kernel time of
one nfnetlink batch (sent on a kept socket, acked), median and max.

* ``chains``: the earlier design: a chain per port (ingress, egress) in
  ``inet`` and a port-security chain per port in ``bridge``, reached by
  verdict maps; a rule change empties and refills the port's ingress chain
  (DELRULE + NEWRULE).
* ``elements`` (design a, the one kept: ``common.fabric.port_firewall``): the
  rules are elements of concatenated interval sets keyed by port, one
  shared chain per direction; a rule change is one NEWSETELEM (and the
  DELSETELEM that takes it back).
* ``shards`` (design b): the same chains as ``chains``, but the port's
  ingress chain in a table of its own of 64 ports (hooked, with its own
  verdict map) next to the other ports' tables; a rule change refills it.

    .venv/bin/python bench/security_group_designs.py [--sizes 10,1000] [--repeats 15]
        [--out bench/out]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import ipaddress
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import libnft, netns, nft_elements, nft_rules
from common.fabric.port_firewall import Port, PortFirewall, Rule, l2_chain_rules
from common.netns import run_in_netns

GROUP = "00000000-0000-4000-8000-0000000000aa"
SHARD = 64
PORT_RULES = ["ct state established,related accept", "ct state invalid drop",
              "meta nfproto ipv4 meta l4proto tcp th dport 22 accept", "drop"]


def ports(n: int) -> list[Port]:
    base = int(ipaddress.IPv4Address("10.9.0.0"))
    return [Port(f"x{i}", f"02:00:09:00:{i // 256:02x}:{i % 256:02x}",
                 (str(ipaddress.IPv4Address(base + i)),), (),
                 (Rule("ingress", protocol="tcp", port_min=22, remote_group_id=GROUP),
                  Rule("egress"))) for i in range(n)]


def timed(send: Callable[[], None], undo: Callable[[], None], repeats: int) -> list[float]:
    """`send`'s time, each followed by `undo`, 50 ms apart (the kernel frees
    what a batch deleted after an RCU grace period: not the next one's cost)."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        send()
        out.append(time.perf_counter() - start)
        time.sleep(0.05)
        undo()
        time.sleep(0.05)
    return out


def chain_tables(ns: str, n: int, prefix: str, size: int) -> None:
    """The earlier layout, in tables of `size` ports: per port a bridge
    port-security chain and inet ingress/egress chains behind verdict maps."""
    made = ports(n)
    for start in range(0, n, size):
        t = f"{prefix}{start // size}"
        text = [f"add table bridge {t}",
                f"add map bridge {t} ports {{ typeof iifname : verdict; }}",
                f"add chain bridge {t} preh {{ type filter hook prerouting priority -300; }}",
                f"add rule bridge {t} preh iifname vmap @ports",
                f"add table inet {t}", f"add map inet {t} egm {{ typeof iifname : verdict; }}",
                f"add map inet {t} inm {{ typeof meta mark : verdict; }}",
                f"add chain inet {t} preh {{ type filter hook prerouting priority 0; }}",
                f"add rule inet {t} preh iifname vmap @egm",
                f"add chain inet {t} fwdh {{ type filter hook forward priority 0; }}",
                f"add rule inet {t} fwdh meta mark vmap @inm"]
        for i, p in enumerate(made[start:start + size], start):
            text += [f"add chain bridge {t} l2_{i}",
                     *(f"add rule bridge {t} l2_{i} {r}" for r in l2_chain_rules(p)),
                     f'add element bridge {t} ports {{ "{p.device}" : jump l2_{i} }}']
            for kind, key in (("eg", f'"{p.device}"'), ("in", str(i + 1))):
                text += [f"add chain inet {t} {kind}_{i}",
                         *(f"add rule inet {t} {kind}_{i} {r}" for r in PORT_RULES),
                         f"add element inet {t} {kind}m {{ {key} : jump {kind}_{i} }}"]
        libnft.run(ns, "\n".join(text) + "\n")


def send(sock: socket.socket, exprs: list[bytes]) -> None:
    """The first port's ingress chain (of table t0) emptied and refilled."""
    nft_elements.send_batch([nft_rules.flush_message("inet", "t0", "in_0"),
                             *(nft_rules.rule_message("inet", "t0", "in_0", e) for e in exprs)],
                            sock=sock)


def measure(n: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"ports": n}
    compiler = nft_rules.Compiler()
    added = [*PORT_RULES[:3], "meta nfproto ipv4 meta l4proto tcp th dport 20000 accept", "drop"]
    # One table of every port (chains), and tables of SHARD ports (shards).
    for design, size in (("chains", n), ("shards", SHARD)):
        ns = f"sgd{os.getpid() % 10000}{design[0]}"
        netns.ensure_netns(ns)
        try:
            chain_tables(ns, n, "t", size)
            sock = run_in_netns(ns, nft_elements.open_socket)
            (new, old) = compiler.compile([("inet", "t0", [], added),
                                           ("inet", "t0", [], PORT_RULES)])
            runs = timed(functools.partial(send, sock, new), functools.partial(send, sock, old),
                         repeats)
            sock.close()
            out[design] = summary(runs)
        finally:
            netns.remove_netns(ns)
    ns = f"sgd{os.getpid() % 10000}e"
    netns.ensure_netns(ns)
    try:
        fw = PortFirewall(ns)
        fw.setup()
        made = ports(n)
        fw.apply(made, {GROUP: [p.ips[0] for p in made]})
        p0 = made[0]
        more = Port(p0.device, p0.mac, p0.ips, (),
                    (*p0.rules, Rule("ingress", protocol="tcp", port_min=20000)))
        add, back = fw._element_messages(more), []
        fw._ports[p0.device] = more
        back = fw._element_messages(p0)
        fw._ports[p0.device] = p0
        out["elements"] = summary(timed(lambda: fw._send(add), lambda: fw._send(back), repeats))
    finally:
        netns.remove_netns(ns)
    compiler.close()
    return out


def summary(runs: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(runs) * 1000, "max_ms": max(runs) * 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,1000")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = ap.parse_args()
    result: dict[str, Any] = {
        "bench": "security_group_designs",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
        "runs": [measure(int(n), args.repeats) for n in args.sizes.split(",")],
    }
    result["loadavg_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "security_group_designs.json"), "w") as f:
        json.dump(result, f, indent=2)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = [r["ports"] for r in result["runs"]]
    for design in ("chains", "shards", "elements"):
        ax.plot(sizes, [r[design]["median_ms"] for r in result["runs"]], "o-", label=design)
    ax.set_xscale("log")
    ax.set_xlabel("ports on the host")
    ax.set_ylabel("kernel commit of one rule change, ms (median)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "security_group_designs.png"), dpi=110)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
