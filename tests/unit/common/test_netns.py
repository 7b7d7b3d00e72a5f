"""Nothing of the product loads pyroute2: links, addresses and routes are raw
rtnetlink (common.rtnl), namespaces are made and removed without fork."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

CHECK = """
import sys
import common.fabric.linuxbridge, common.fabric.ovs, common.fabric.vxlan
import aio.allinone, aio.nsguest, aio.vm_backend
from common import netns
assert "pyroute2" not in sys.modules, sorted(m for m in sys.modules if "pyroute2" in m)
"""


def test_the_fabrics_the_namespace_helpers_and_the_all_in_one_load_no_pyroute2() -> None:
    # A fresh interpreter: this one may have imported anything.
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          env=env, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
