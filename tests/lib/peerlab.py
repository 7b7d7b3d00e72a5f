"""A stock strongSwan peer for the VPN tests, configured the way a customer
would: a plain swanctl.conf and strongswan.conf written here (not by
cloudnet), charon started by hand in its own namespace, ``swanctl
--load-all`` to load it.

    guest p1 10.10.0.11 ─ router (pub0 203.0.113.10) ─ up 203.0.113.1 / 192.0.2.1
                                                          │
                              h1 172.16.1.10 ─┐           │
                                              ├─ peer 192.0.2.2 (charon, stock config)
                              h2 172.16.2.10 ─┘
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudnet.router.v1 import vpn_pb2

from tests.lib.routerlab import PUBLIC_IP, Topology, sh

PEER_IP = "192.0.2.2"
UP_PEER_SIDE = "192.0.2.1"
PEER_NETS = ("172.16.1.0/24", "172.16.2.0/24")
PEER_HOSTS = ("172.16.1.10", "172.16.2.10")
LOCAL_NET = "10.10.0.0/24"
PSK = "s3cret-Key_for.the+tunnel"
CHARON = "/usr/lib/ipsec/charon"

STRONGSWAN_CONF = """\
charon {{
  load_modular = no
  load = openssl random nonce kdf aes sha1 sha2 hmac gcm gmp pem pkcs1 x509 pubkey \
kernel-libipsec kernel-netlink socket-default vici
  plugins {{
    vici {{
      socket = unix:///run/charon.vici
    }}
  }}
  filelog {{
    peer {{
      path = {log}
      ike_name = yes
      flush_line = yes
      default = 1
    }}
  }}
}}
swanctl {{
  load = pem pkcs1 x509 pubkey random openssl
}}
"""

SWANCTL_V2 = """\
connections {{
  cloud {{
    version = 2
    local_addrs = {peer}
    remote_addrs = {router}
    proposals = aes256gcm16-prfsha384-ecp384,aes256-sha256-curve25519
    dpd_delay = 2s
    local {{
      auth = psk
      id = {peer}
    }}
    remote {{
      auth = psk
      id = {router}
    }}
    children {{
      nets {{
        local_ts = {nets}
        remote_ts = {local}
        esp_proposals = aes256gcm16-ecp384
        dpd_action = clear
      }}
    }}
  }}
}}
secrets {{
  ike-cloud {{
    id-a = {peer}
    id-b = {router}
    secret = "{psk}"
  }}
}}
"""

SWANCTL_V1 = """\
connections {{
  cloud {{
    version = 1
    local_addrs = {peer}
    remote_addrs = {router}
    proposals = aes256-sha256-modp2048
    dpd_delay = 2s
    dpd_timeout = 10s
    local {{
      auth = psk
      id = {peer}
    }}
    remote {{
      auth = psk
      id = {router}
    }}
    children {{
      net1 {{
        local_ts = {net1}
        remote_ts = {local}
        esp_proposals = aes256-sha256-modp2048
      }}
      net2 {{
        local_ts = {net2}
        remote_ts = {local}
        esp_proposals = aes256-sha256-modp2048
      }}
    }}
  }}
}}
secrets {{
  ike-cloud {{
    id-a = {peer}
    id-b = {router}
    secret = "{psk}"
  }}
}}
"""


def router_connection(ike_version: int, **fields: object) -> vpn_pb2.VpnConnection:
    """The router's side of the tunnel (what netmgr would send)."""
    c = vpn_pb2.VpnConnection(
        id="c1", local_address=PUBLIC_IP, peer_address=PEER_IP, local_cidrs=[LOCAL_NET],
        peer_cidrs=list(PEER_NETS), psk=PSK, ike_version=ike_version, dpd_delay_seconds=2,
        ike_proposals=(["aes256gcm16-prfsha384-ecp384"] if ike_version == 2
                       else ["aes256-sha256-modp2048"]),
        esp_proposals=(["aes256gcm16-ecp384"] if ike_version == 2
                       else ["aes256-sha256-modp2048"]),
    )
    for k, v in fields.items():
        setattr(c, k, v)
    return c


@dataclass
class Peer:
    topo: Topology
    ns: str
    up: str
    dir: str
    ike_version: int
    hosts: list[str] = field(default_factory=list)

    @property
    def run(self) -> str:
        return os.path.join(self.dir, "run")

    def pid(self) -> int | None:
        try:
            with open(os.path.join(self.run, "charon.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self, load: bool = True) -> None:
        """charon by hand (private /run in the namespace's mount namespace), then swanctl."""
        os.makedirs(self.run, exist_ok=True)
        env = {**os.environ, "STRONGSWAN_CONF": os.path.join(self.dir, "strongswan.conf")}
        subprocess.run(["ip", "netns", "exec", self.ns, "setsid", "-f", "sh", "-c",
                        'mount --bind "$1" /run && exec "$2"', "peer", self.run, CHARON],
                       env=env, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not os.path.exists(os.path.join(self.run, "charon.vici")):
            assert time.monotonic() < deadline, "peer charon did not start"
            time.sleep(0.05)
        if load:
            self.load()

    def load(self) -> None:
        sh("ip", "netns", "exec", self.ns, "env",
           f"STRONGSWAN_CONF={os.path.join(self.dir, 'strongswan.conf')}",
           "swanctl", "--load-all", "--noprompt", "--file", os.path.join(self.dir, "swanctl.conf"),
           "--uri", f"unix://{self.run}/charon.vici")

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for name in ("charon.pid", "charon.vici"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.run, name))

    def sas(self) -> str:
        return sh("ip", "netns", "exec", self.ns, "swanctl", "--list-sas", "--uri",
                  f"unix://{self.run}/charon.vici", check=False)


def make_peer(topo: Topology, up: str, ike_version: int, *,
              peer_ts: Sequence[str] = PEER_NETS,
              local_ts: Sequence[str] = (LOCAL_NET,)) -> Peer:
    """The peer namespace behind the uplink, its two subnets with one host each,
    and its configuration files (charon not started yet). ``peer_ts`` and
    ``local_ts``: the IKEv2 child's selectors (the peer's side, the router's)."""
    peer = topo.ns("peer")
    link = f"{topo.prefix}pr"[:15]
    sh("ip", "-n", up, "link", "add", link, "type", "veth", "peer", "name", "wan0",
       "netns", peer)
    sh("ip", "-n", up, "addr", "add", f"{UP_PEER_SIDE}/24", "dev", link)
    sh("ip", "-n", up, "link", "set", link, "up")
    sh("ip", "-n", peer, "addr", "add", f"{PEER_IP}/24", "dev", "wan0")
    sh("ip", "-n", peer, "link", "set", "wan0", "up")
    sh("ip", "-n", peer, "link", "set", "lo", "up")
    sh("ip", "-n", peer, "route", "add", "default", "via", UP_PEER_SIDE)
    sh("ip", "netns", "exec", peer, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    hosts = []
    for i, (net, host) in enumerate(zip(PEER_NETS, PEER_HOSTS, strict=True), 1):
        h = topo.ns(f"h{i}")
        gw = net.replace(".0/24", ".1")
        sh("ip", "-n", peer, "link", "add", f"lan{i}", "type", "veth", "peer", "name", "eth0",
           "netns", h)
        sh("ip", "-n", peer, "addr", "add", f"{gw}/24", "dev", f"lan{i}")
        sh("ip", "-n", peer, "link", "set", f"lan{i}", "up")
        sh("ip", "-n", h, "addr", "add", f"{host}/24", "dev", "eth0")
        sh("ip", "-n", h, "link", "set", "eth0", "up")
        sh("ip", "-n", h, "link", "set", "lo", "up")
        sh("ip", "-n", h, "route", "add", "default", "via", gw)
        hosts.append(h)
    d = os.path.join(topo.state_dir, "peer")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "strongswan.conf"), "w") as f:
        f.write(STRONGSWAN_CONF.format(log=os.path.join(d, "charon.log")))
    template = SWANCTL_V2 if ike_version == 2 else SWANCTL_V1
    with open(os.path.join(d, "swanctl.conf"), "w") as f:
        f.write(template.format(peer=PEER_IP, router=PUBLIC_IP, nets=",".join(peer_ts),
                                net1=PEER_NETS[0], net2=PEER_NETS[1], local=",".join(local_ts),
                                psk=PSK))
    return Peer(topo, peer, up, d, ike_version, hosts)


def capture_public(topo: Topology, seconds: float, traffic: list[list[str]],
                   check: bool = True) -> list[Any]:
    """Packets on the uplink's side of the router's public segment while
    ``traffic`` runs (each an argv, one after the other), read back with scapy."""
    from scapy.all import rdpcap

    pcap = os.path.join(topo.state_dir, "public.pcap")
    dump = subprocess.Popen(["ip", "netns", "exec", f"{topo.prefix}-up", "tcpdump", "-n", "-i",
                             "eth0", "-w", pcap, "-U"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # tcpdump attached
        for argv in traffic:
            sh(*argv, timeout=60, check=check)
        time.sleep(seconds)
    finally:
        dump.terminate()
        dump.wait(timeout=10)
    return list(rdpcap(pcap))
