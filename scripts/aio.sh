#!/usr/bin/env bash
# Start an all-in-one cloudnet on this host (fresh Debian 12, run as root):
# installs what it needs, builds the topology in network namespaces, starts
# the router agent and the network manager, and runs the demo (a tenant
# network with two guests: leases, DNS, SNAT). Keeps serving until Ctrl-C.
# Extra arguments go to `cloudnet-aio up`, e.g. `--exit` to stop after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/cloudnet-aio up --demo "$@"
