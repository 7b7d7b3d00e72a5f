"""Importing the fabrics imports no pyroute2; a process that uses it swaps
in the fork-free namespace primitives with one explicit, idempotent call."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

CHECK = """
import sys
import common.fabric.linuxbridge, common.fabric.ovs, common.fabric.vxlan
from common import netns
assert "pyroute2" not in sys.modules, "the fabrics and namespace helpers import no pyroute2"
import pyroute2.netns
assert pyroute2.netns.create_socket is not netns.create_socket, "patched on import"
netns.install()
netns.install()
assert pyroute2.netns.create_socket is netns.create_socket
assert pyroute2.netns.create is netns.create
"""


def test_importing_patches_nothing_and_install_is_idempotent() -> None:
    # A fresh interpreter: this process may have installed them already.
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          env=env, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
