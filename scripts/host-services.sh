#!/usr/bin/env bash
# Start the shared host daemons compute needs, when they are not running:
# ovsdb-server + ovs-vswitchd (Open vSwitch, userspace datapath capable) and
# libvirtd + virtlogd. There is no systemd here (nor in CI), so the project
# starts them itself. Idempotent: a second run only checks that each answers.
#
#   scripts/host-services.sh [start|status|stop]
#
# These are *shared host services*: tests start them through this script and
# leave them running (like a host's own daemons); `stop` ends them by their
# pid files.
set -euo pipefail

OVS_RUN=/var/run/openvswitch          # libvirt looks for db.sock here
OVS_DB=/etc/openvswitch/conf.db
OVS_SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
OVS_LOG=/var/log/openvswitch

alive() {  # alive PIDFILE: the pid in it is a running process
  [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null
}

wait_for() {  # wait_for SECONDS CMD...: poll until CMD succeeds
  local n=$(( $1 * 10 )); shift
  while ! "$@" >/dev/null 2>&1; do
    n=$((n - 1)); [ $n -gt 0 ] || return 1; sleep 0.1
  done
}

start_ovs() {
  mkdir -p "$OVS_RUN" "$OVS_LOG" "$(dirname "$OVS_DB")"
  if [ ! -s "$OVS_DB" ]; then
    ovsdb-tool create "$OVS_DB" "$OVS_SCHEMA"
  elif [ "$(ovsdb-tool needs-conversion "$OVS_DB" "$OVS_SCHEMA")" = yes ]; then
    ovsdb-tool convert "$OVS_DB" "$OVS_SCHEMA"
  fi
  if ! alive "$OVS_RUN/ovsdb-server.pid"; then
    ovsdb-server "$OVS_DB" --remote=punix:"$OVS_RUN/db.sock" \
      --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
      --pidfile="$OVS_RUN/ovsdb-server.pid" --detach \
      --log-file="$OVS_LOG/ovsdb-server.log" --unixctl="$OVS_RUN/ovsdb-server.ctl" -vconsole:off
    wait_for 10 ovs-vsctl --no-wait show
    ovs-vsctl --no-wait init
  fi
  if ! alive "$OVS_RUN/ovs-vswitchd.pid"; then
    # No OVS kernel module here: bridges use datapath_type=netdev (userspace).
    ovs-vswitchd unix:"$OVS_RUN/db.sock" --pidfile="$OVS_RUN/ovs-vswitchd.pid" --detach \
      --log-file="$OVS_LOG/ovs-vswitchd.log" -vconsole:off
  fi
  wait_for 10 ovs-vsctl --timeout=2 show
  wait_for 10 ovs-appctl -t "$OVS_RUN/ovs-vswitchd.$(cat "$OVS_RUN/ovs-vswitchd.pid").ctl" version
}

start_libvirt() {
  mkdir -p /var/run/libvirt /var/log/libvirt
  # What Debian's udev rule does (no udev here): /dev/kvm root:kvm 0660. With
  # root-only /dev/kvm, libvirtd's capability probe (run as root) finds KVM but
  # its "usable by the qemu user" check does not, so it throws its cache away
  # and re-probes QEMU (~40 s) on every domain define.
  if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  fi
  if ! pgrep -x virtlogd >/dev/null; then
    virtlogd -d
  fi
  if ! pgrep -x libvirtd >/dev/null; then
    libvirtd -d
  fi
  wait_for 20 virsh -c qemu:///system version
}

status() {
  local rc=0
  for p in ovsdb-server ovs-vswitchd; do
    if alive "$OVS_RUN/$p.pid"; then echo "$p: running"; else echo "$p: stopped"; rc=1; fi
  done
  for p in virtlogd libvirtd; do
    if pgrep -x $p >/dev/null; then echo "$p: running"; else echo "$p: stopped"; rc=1; fi
  done
  return $rc
}

stop() {
  for f in "$OVS_RUN/ovs-vswitchd.pid" "$OVS_RUN/ovsdb-server.pid" \
           /var/run/libvirtd.pid /var/run/virtlogd.pid; do
    alive "$f" && kill "$(cat "$f")" || true
  done
}

case "${1:-start}" in
  start)
    # Two starts at once (two test workers, an agent beside them) would both
    # find a daemon missing and start it twice: one at a time, under a lock
    # that flock(1) holds itself (-o: the daemons started must not inherit
    # it, or they would hold it for good).
    if [ -z "${CLOUDNET_HOST_SERVICES_LOCKED:-}" ]; then
      CLOUDNET_HOST_SERVICES_LOCKED=1 exec flock -o /run/cloudnet-host-services.lock \
        bash "$0" start
    fi
    for t in ovsdb-server ovs-vswitchd libvirtd virtlogd; do
      command -v $t >/dev/null || { echo "host-services: $t missing (scripts/bootstrap.sh)" >&2; exit 1; }
    done
    start_ovs
    start_libvirt
    echo "host-services: ovsdb-server, ovs-vswitchd, virtlogd, libvirtd running"
    ;;
  status) status ;;
  stop) stop ;;
  *) echo "usage: $0 [start|status|stop]" >&2; exit 2 ;;
esac
