"""What holds for every integration test: it needs root (skipped without),
``cloud`` is the module's all-in-one cloud, and the backend marks
(netns_only, vm_only) skip a test on the other router backend."""

from __future__ import annotations

import os

import pytest

from aio.allinone import AllInOne

# What boots VMs under TCG: the [vm] variants (a router VM per module) and the
# modules about VMs. They make one scope for pytest-xdist, run one after the
# other on one worker (each is sized for the CPU a VM gets alone), beside the
# namespace tests on the other worker, one module at a time each (its
# fixtures are built once, and later tests of a module build on earlier
# ones): scripts/test.sh runs them with ``-n 2 --dist loadscope``, and the
# scheduler below makes the scopes. (Not xdist's own ``xdist_group`` marks:
# xdist 3.8 renames the tests' node IDs for them, which pytest 9 ignores.)
VM_SCOPE = "vm"
_VM_MODULES = ("tests/integration/vm/", "tests/integration/image/",
               "tests/integration/compute/test_vm_")


def xdist_scope(nodeid: str) -> str:
    """The scope of a test: ``VM_SCOPE`` for what boots VMs, else its module."""
    path = nodeid.split("::")[0]
    if path.startswith(_VM_MODULES):
        return VM_SCOPE
    if "[" in nodeid and "vm" in nodeid[nodeid.index("[") + 1:-1].split("-"):
        return VM_SCOPE  # a [vm] variant: the router backend's parameter
    return path


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class VmScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return VmScopeScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (network namespaces)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def cloud(aio_cloud: AllInOne) -> AllInOne:
    """In the integration tests, ``cloud`` is the module's all-in-one cloud
    (tests/fixtures/allinone.py); in the unit tests the same name is the
    in-process netmgr server (tests/unit/conftest.py)."""
    return aio_cloud


@pytest.fixture(autouse=True)
def _backend_marks(request):
    """Skip @pytest.mark.netns_only tests on VM routers (and vm_only on namespaces)."""
    if "aio_cloud" not in request.fixturenames:
        return
    backend = request.getfixturevalue("aio_cloud").router_backend
    netns_only = request.node.get_closest_marker("netns_only")
    if backend == "vm" and netns_only:
        pytest.skip(netns_only.args[0] if netns_only.args
                    else "about a namespace router on this host (netns backend only)")
    if backend != "vm" and request.node.get_closest_marker("vm_only"):
        pytest.skip("needs the VM backend's compute agent (vm backend only)")
