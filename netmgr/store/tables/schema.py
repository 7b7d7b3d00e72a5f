"""Every table of the network manager in one metadata: what the migrations
build, and what a schema check compares them with. (The store's modules
import only the tables they use.)"""

from __future__ import annotations

from netmgr.store.tables import (
    core,
    edge,
    hosts,
    keypairs,
    redundancy,
    router_vms,
    vpc,
    vpn,
)
from netmgr.store.tables.base import Base

# Importing a table module registers its tables with Base.
TABLE_MODULES = (core, edge, hosts, keypairs, redundancy, router_vms, vpc, vpn)
metadata = Base.metadata
