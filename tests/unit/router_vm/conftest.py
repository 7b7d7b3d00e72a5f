from tests.unit.netmgr.conftest import acme, cloud, make_cloud  # noqa: F401
