"""Every table of the network manager in one metadata: what the migrations
build, and what a schema check compares them with. (The store's modules
import only the tables they use.)"""

from __future__ import annotations

from netmgr.store.tables import (
    audit,
    core,
    dns,
    edge,
    hosts,
    keypairs,
    redundancy,
    replicas,
    router_vms,
    security_groups,
    vpc,
    vpn,
)
from netmgr.store.tables.base import Base

# Importing a table module registers its tables with Base.
TABLE_MODULES = (audit, core, dns, edge, hosts, keypairs, redundancy, replicas, router_vms,
                 security_groups, vpc, vpn)
metadata = Base.metadata
