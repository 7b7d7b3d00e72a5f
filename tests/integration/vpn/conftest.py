"""The VPN tests use the router agent tests' fixtures (a fabric, an in-process agent)."""

from tests.integration.router.conftest import agent, topo

__all__ = ["agent", "topo"]
