"""In the unit tests, ``cloud`` is the in-process netmgr server of the test
(tests/fixtures/netmgr_cloud.py); in the integration tests the same name is
the all-in-one cloud (tests/integration/conftest.py)."""

from __future__ import annotations

import pytest

from tests.lib.netmgr_cloud import Cloud


@pytest.fixture
def cloud(netmgr_cloud: Cloud) -> Cloud:
    return netmgr_cloud
