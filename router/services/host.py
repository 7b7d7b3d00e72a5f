"""The host features the services render for, probed from the running kernel.

One ``KernelProbe`` per agent process, given to every router's services:
each feature is probed once, when first asked for (a probe may load a
kernel module or dry-run nft, which the agent's start must not pay for).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading

from router.services.nftables import compat

# Connections one router may track at once: a flood through one router
# takes at most this many entries (about 20 MB) of the host's conntrack memory
# and hash table, which every namespace shares.
ROUTER_CONNTRACK_LIMIT = 65536


class KernelProbe:
    """``base.HostFeatures`` of this host, each probed on first use; the
    share of each router in the host's connection tracking is the agent's."""

    def __init__(self, conntrack_limit: int = ROUTER_CONNTRACK_LIMIT) -> None:
        self.conntrack_limit = conntrack_limit
        self._lock = threading.Lock()
        self._vpn_backend: str | None = None
        self._map_as_set: bool | None = None

    def vpn_backend(self) -> str:
        with self._lock:
            if self._vpn_backend is None:
                self._vpn_backend = probe_vpn_backend()
            return self._vpn_backend

    def nft_map_as_set_lookup(self) -> bool:
        with self._lock:
            if self._map_as_set is None:
                self._map_as_set = compat.map_as_set_lookup()
            return self._map_as_set

    def router_conntrack_limit(self) -> int:
        return self.conntrack_limit


def probe_vpn_backend() -> str:
    """"kernel" when the kernel has ESP, else "libipsec" (CLOUDNET_VPN_BACKEND overrides)."""
    forced = os.environ.get("CLOUDNET_VPN_BACKEND", "")
    if forced in ("kernel", "libipsec"):
        return forced
    if shutil.which("modprobe"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["modprobe", "-q", "esp4"], check=False, timeout=10,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    if os.path.isdir("/sys/module/esp4"):
        return "kernel"
    return "libipsec"
