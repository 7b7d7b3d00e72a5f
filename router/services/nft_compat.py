"""What the running kernel's nf_tables accepts, probed once per agent process.

The ruleset counts established traffic per edge rule by looking the NAT maps
up as sets (`ip daddr @eip_in`: element counters only). Kernels before that
was allowed refuse such a lookup with EINVAL, among them the router
appliance's Debian 12 kernel (6.1): there the counting rules are left out
(the DNAT/SNAT map lookups still count each connection's first packet).
"""

from __future__ import annotations

import functools
import subprocess

_PROBE = """table inet cloudnet_probe {
	map m { type ipv4_addr : ipv4_addr; }
	chain c { ip daddr @m; }
}
"""


@functools.cache
def map_as_set_lookup() -> bool:
    """True unless the kernel refuses a map looked up as a set (nft -c: EINVAL).
    Any other failure (no nft, not root: the unit tests) assumes a modern kernel."""
    try:
        proc = subprocess.run(["nft", "-c", "-f", "-"], input=_PROBE, capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return not (proc.returncode and "Invalid argument" in proc.stderr)
