"""Loads the shared fixtures for every test (pytest_plugins is only honoured
here, in the top-level conftest).

Fixtures live in tests/fixtures/, the helpers tests import in tests/lib/;
tests import test code only as ``tests.lib.*`` (tests/test_architecture.py
holds them to it): no conftest, fixture module or test module is imported.
"""

import os

import pytest

# The suite's own servers (in-process netmgr, the shared all-in-one clouds)
# are plaintext, built so explicitly (insecure=True); the CLI, TLS by default,
# is told so here. The TLS tests (tests/integration/security/) unset it.
os.environ["CLOUDNET_INSECURE"] = "1"

# Before tests.lib is imported: its asserts then explain themselves on failure,
# as they did while the helpers lived in conftests and test modules.
pytest.register_assert_rewrite("tests.lib")


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist (scripts/test.sh runs the unit tests on two
    # workers) each worker gets a PostgreSQL database of its own.
    worker, url = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("CLOUDNET_TEST_PG_URL")
    if worker and url:
        from tests.lib.netmgr_cloud import worker_database

        os.environ["CLOUDNET_TEST_PG_URL"] = worker_database(url, worker)


pytest_plugins = [
    "tests.fixtures.netmgr_cloud",  # unit: the in-process netmgr server and its tenants
    "tests.fixtures.allinone",      # integration: the all-in-one cloud, tenants, guest servers
    "tests.fixtures.edge",          # integration: the edge suite's per-module network
    "tests.fixtures.vpc",           # integration: VPCs of new tenants
    "tests.fixtures.router_lab",    # integration: a fabric and an in-process router agent
    "tests.fixtures.compute",       # integration: host services, guest image, compute hosts
]
