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
# The test helpers (tests and benches import them), the integration tests
# (their protobuf messages and streams) and the reconciler's test doubles
# (checked against its store Protocols) are typed too.
.venv/bin/mypy common aio netmgr router compute bench \
  tests/lib tests/integration \
  tests/unit/netmgr/reconcile/test_reconciler.py tests/unit/netmgr/reconcile/test_delta_push.py
echo "== tests"
# Build the router appliance image first (skipped when nothing changed,
# about 20 s when only the code changed, 1-2 min cold; see
# images/router/README.md) so the image boot tests run. CLOUDNET_BUILD_IMAGES=0
# skips the build, and with it those tests.
# The cloud-init guest (images/cloud-guest, Debian 12 with cloud-init and
# OpenSSH) likewise: about a minute cold, under a second when unchanged; its
# test (tests/integration/compute/test_vm_cloud_init.py) skips without it.
if [ "${CLOUDNET_BUILD_IMAGES:-1}" = 1 ]; then
  bash images/router/build.sh
  bash images/cloud-guest/build.sh
fi
# A scratch PostgreSQL (unix socket only, removed on exit) so the store's
# tests run on PostgreSQL as well as SQLite.
if [ -z "${CLOUDNET_TEST_PG_URL:-}" ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$pgbin" ] && id postgres >/dev/null 2>&1; then
    pgdir=$(mktemp -d /tmp/cloudnet-pg.XXXXXX)
    chown postgres "$pgdir"
    pg() { runuser -u postgres -- "$pgbin/$1" "${@:2}"; }
    pg initdb -D "$pgdir/data" -A trust -U cloudnet >/dev/null
    pg pg_ctl -D "$pgdir/data" -l "$pgdir/log" -w -o "-k $pgdir -c listen_addresses=''" start >/dev/null
    trap 'pg pg_ctl -D "$pgdir/data" -m fast -w stop >/dev/null; rm -rf "$pgdir"' EXIT
    pg createdb -h "$pgdir" -U cloudnet cloudnet
    export CLOUDNET_TEST_PG_URL="postgresql+psycopg://cloudnet@/cloudnet?host=$pgdir"
    echo "PostgreSQL for the tests: $CLOUDNET_TEST_PG_URL"
  fi
fi
set +e
# The slowest tests are listed at the end, to keep the suite's time in view.
if [ $# -eq 0 ]; then
  # The unit tests (logic and in-process servers, each its own database; on
  # PostgreSQL each worker its own, tests/conftest.py) on two workers; then
  # the integration tests on two: every test that boots VMs under TCG one
  # after the other on one worker (one xdist scope, tests/integration/
  # conftest.py), the namespace tests module by module on the other.
  "$PY" -m pytest -p no:cacheprovider --durations=30 -n 2 tests/unit tests/test_architecture.py
  rc=$?
  # Started once, before the workers (each would start what it finds missing).
  bash scripts/host-services.sh start
  "$PY" -m pytest -p no:cacheprovider --durations=30 -n 2 --dist loadscope tests/integration
  rc_integration=$?
  [ $rc -ne 0 ] || rc=$rc_integration
else
  "$PY" -m pytest -p no:cacheprovider --durations=30 "$@"
  rc=$?
fi
set -e
# pytest's "no tests ran" (5) is a failure too.
exit $rc
