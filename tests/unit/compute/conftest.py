"""netmgr's test server fixtures, for the HostService tests."""

from tests.unit.netmgr.conftest import acme, cloud, make_cloud  # noqa: F401
