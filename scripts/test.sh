#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, set-up included:
# installs what cloudnet needs (apt + a virtualenv), lints, then runs the unit
# and integration tests (as root: the integration tests build network
# namespaces and run dnsmasq and nftables for real). Extra arguments go to
# pytest, e.g. `scripts/test.sh tests/unit -k ipam`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
PY=.venv/bin/python
echo "== lint (ruff, mypy)"
.venv/bin/ruff check .
.venv/bin/mypy netmgr router compute bench
echo "== tests"
set +e
"$PY" -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
# pytest's "no tests ran" (5) is a failure too.
exit $rc
