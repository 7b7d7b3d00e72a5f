from tests.integration.e2e.conftest import cloud, make_tenant  # noqa: F401 (fixtures)
from tests.integration.router.conftest import agent, topo  # noqa: F401 (fixtures)
