"""A site-to-site VPN connection through the all-in-one's API: wait until
its tunnel is up, and the routers' charon logs when it is not."""

from __future__ import annotations

import glob
import os
import time

from cloudnet.netmgr.v1 import vpn_pb2 as vpb


def wait_established(vpn, t, conn_id: str, timeout: float = 90,
                     other_than: int = -1) -> vpb.VpnConnection:
    deadline = time.monotonic() + timeout
    while True:
        c = t.api.call(vpn.GetVpnConnection, vpb.GetVpnConnectionRequest(id=conn_id))
        s = c.status
        if s.ike_state == "ESTABLISHED" and s.child_sas and \
                all(ch.state == "INSTALLED" for ch in s.child_sas):
            return c
        if time.monotonic() > deadline:
            raise AssertionError(f"tunnel {conn_id} not up: {c}\n{charon_logs(t)}")
        time.sleep(0.5)


def charon_logs(t) -> str:
    """The tail of every router's charon log (a failure's explanation)."""
    out = []
    for path in sorted(glob.glob(os.path.join(t.cloud.state_dir, "agent", "routers", "*",
                                              "strongswan", "charon.log"))):
        with open(path, errors="replace") as f:
            out.append(f"--- {path}\n" + "".join(f.readlines()[-40:]))
    return "\n".join(out)
