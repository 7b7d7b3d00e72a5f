"""The network manager's store (SQLAlchemy; SQLite or PostgreSQL).

``facade.Store`` is what the servers, the reconciler and the tests get: it is
composed of one repository per kind of object (``tenants``, ``zone``,
``networks``, ``ports``, ``routers``, ``public_ips``, ``edge``,
``load_balancers``, ``edge_router`` from ``edge_router_view``, ``acls``,
``routes``, ``vpcs``, ``vpn``, ``hosts``), each holding the one
``base.Database`` (one transaction per call); the VM backend's
``router_vms.RouterVmStore`` is built by ``netmgr.server`` over that same
database. What repositories do inside a caller's transaction and share is
in ``shared``; rows become model objects in ``rows`` (``rows.status``: the
status envelope of every object a router serves); allocations are in
``ipam``. The tables are in ``tables/`` (all of them: ``tables.schema``),
the engine and migrations in ``engine`` and ``migrations/``.
"""
