"""The provider edge's BGP speaker: stock FRR (zebra + bgpd) in the edge's
namespace with a plain config file of its own, accepting sessions from any
router on the provider network (dynamic neighbours by listen range) and
installing what it learns into the edge's kernel table, by which it routes.

Used by the all-in-one and by the tests and benches (a BGP speaker of the
provider's, not the project's router code).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time

FRR_DIR = "/usr/lib/frr"
# Where the all-in-one keeps each edge's FRR files (one directory per prefix).
EDGE_FRR_ROOT = "/run/cloudnet-frr"
FRR_USER = "frr"


@dataclasses.dataclass(frozen=True)
class EdgeBgpConfig:
    asn: int
    router_id: str
    # The zone's (the routers') ASN, and the provider networks they peer from.
    routers_asn: int
    listen_ranges: tuple[str, ...]


def render_config(cfg: EdgeBgpConfig) -> str:
    lines = ["frr defaults traditional", "hostname edge", "!",
             f"router bgp {cfg.asn}", f" bgp router-id {cfg.router_id}",
             " no bgp default ipv4-unicast", " no bgp ebgp-requires-policy"]
    groups = []
    for i, cidr in enumerate(cfg.listen_ranges):
        family = ipaddress.ip_network(cidr).version
        group = f"routers{family}x{i}"
        groups.append((group, family))
        lines += [f" neighbor {group} peer-group", f" neighbor {group} remote-as {cfg.routers_asn}",
                  f" bgp listen range {cidr} peer-group {group}"]
    for family, af in ((4, "ipv4"), (6, "ipv6")):
        lines.append(f" address-family {af} unicast")
        lines += [f"  neighbor {g} activate" for g, f in groups if f == family]
        lines.append(" exit-address-family")
    return "\n".join([*lines, "!", ""])


class BgpEdge:
    """zebra and bgpd in ``netns``; files under ``state_dir``."""

    def __init__(self, netns: str, state_dir: str, cfg: EdgeBgpConfig) -> None:
        self.netns = netns
        self.dir = state_dir
        self.cfg = cfg

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def start(self) -> None:
        if not os.path.exists(f"{FRR_DIR}/bgpd"):
            raise RuntimeError(f"FRR is not installed ({FRR_DIR}/bgpd): scripts/bootstrap.sh "
                               "installs it (Debian package frr)")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(os.path.dirname(self.dir), 0o755)
        with open(self._path("frr.conf"), "w") as f:
            f.write(render_config(self.cfg))
        # The daemons run as FRR's user: their directory is theirs.
        shutil.chown(self.dir, FRR_USER, FRR_USER)
        shutil.chown(self._path("frr.conf"), FRR_USER, FRR_USER)
        os.chmod(self.dir, 0o755)
        common = ["-d", "-u", FRR_USER, "-g", FRR_USER, "-P", "0", "--vty_socket", self.dir,
                  "-z", self._path("zserv.api")]
        self._run(f"{FRR_DIR}/zebra", *common, "-f", "/dev/null", "-i", self._path("zebra.pid"),
                  "--log", f"file:{self._path('zebra.log')}")
        self._wait_for(self._path("zserv.api"))
        self._run(f"{FRR_DIR}/bgpd", *common, "-f", self._path("frr.conf"),
                  "-i", self._path("bgpd.pid"), "--log", f"file:{self._path('bgpd.log')}")
        self._wait_for(self._path("bgpd.vty"))

    def _run(self, *argv: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.netns, *argv], check=True, timeout=30,
                       capture_output=True)

    @staticmethod
    def _wait_for(path: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"FRR did not create {path}")
            time.sleep(0.02)

    def vtysh(self, command: str) -> str:
        return subprocess.run(["vtysh", "--vty_socket", self.dir, "-c", command],
                              check=True, timeout=15, capture_output=True, text=True).stdout

    def routes(self) -> dict[str, str]:
        """Every prefix in the BGP table -> the next hop of its best path."""
        out: dict[str, str] = {}
        for af in ("ipv4", "ipv6"):
            table = json.loads(self.vtysh(f"show bgp {af} unicast json") or "{}")
            for prefix, paths in (table.get("routes") or {}).items():
                best = next((p for p in paths if p.get("bestpath")), paths[0] if paths else {})
                hops = best.get("nexthops") or [{}]
                out[prefix] = str(hops[0].get("ip", ""))
        return out

    def stop(self) -> None:
        """SIGTERM to both daemons (by their pid files), then their files go."""
        pids = []
        for name in ("bgpd.pid", "zebra.pid"):
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError), \
                    open(self._path(name)) as f:
                pid = int(f.read().strip())
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}")
                    and not _zombie(p)]
            time.sleep(0.02)
        shutil.rmtree(self.dir, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
