from tests.integration.e2e.conftest import cloud, make_tenant  # noqa: F401 (fixtures)
