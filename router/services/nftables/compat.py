"""What the running kernel's nf_tables accepts (asked once per agent process,
by ``router.services.host.KernelProbe``).

The ruleset counts established traffic per edge rule by looking the NAT maps
up as sets (`ip daddr @eip_in`: element counters only). Kernels before that
was allowed refuse such a lookup with EINVAL, among them the router
appliance's Debian 12 kernel (6.1): there the counting rules are left out
(the DNAT/SNAT map lookups still count each connection's first packet).
"""

from __future__ import annotations

from router.lib import libnft

_PROBE = """table inet cloudnet_probe {
	map m { type ipv4_addr : ipv4_addr; }
	chain c { ip daddr @m; }
}
"""


def map_as_set_lookup() -> bool:
    """True unless the kernel refuses a map looked up as a set (a dry run:
    EINVAL). Any other failure (no libnftables, not root: the unit tests)
    assumes a modern kernel. In-process (libnftables), not a forked nft -c:
    this runs in a router VM's first apply, where a fork costs under TCG."""
    try:
        libnft.run_here(_PROBE, dry_run=True)
    except OSError:
        return True
    except libnft.NftError as e:
        return "Invalid argument" not in str(e)
    return True
