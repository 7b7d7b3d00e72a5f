"""The network manager as the all-in-one runs it: with the control network's relay.

netmgr reaches the router VMs' agents on the control network. The
all-in-one's netmgr is not on it: its side is the namespace <prefix>-ctl, and
``aio.control_network`` relays there. netmgr itself cannot import aio (only
aio joins rooms and their plumbing), so this composition hands the relay to
``netmgr.server.main``; everything else is ``cloudnet-netmgr`` unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aio.control_network import ControlNetwork
from netmgr import server
from netmgr.reconcile.vm_backend.credentials import RouterVmConfig


def relay(cfg: RouterVmConfig) -> ControlNetwork:
    return ControlNetwork(cfg.control_netns, cfg.run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    return server.main(argv, control_network=relay)


if __name__ == "__main__":
    sys.exit(main())
