from tests.integration.e2e.conftest import (  # noqa: F401 (fixtures)
    _backend_marks,
    cloud,
    make_tenant,
)
from tests.integration.router.conftest import agent, topo  # noqa: F401 (fixtures)
