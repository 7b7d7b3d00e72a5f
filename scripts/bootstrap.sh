#!/usr/bin/env bash
# Install everything cloudnet needs on a Debian 12 host: the daemons and
# client tools (apt) and a virtualenv with the project and its Python
# dependencies (pip). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # router data plane and daemons
  iproute2 nftables dnsmasq-base conntrack procps psmisc haproxy
  # site-to-site VPN: charon (+ kernel-libipsec, in libcharon-extra-plugins, for
  # hosts without kernel ESP) and swanctl (the tests' stock peer)
  strongswan-charon strongswan-swanctl libcharon-extra-plugins
  # openssl plugin: AES-GCM, ECP and curve25519 DH groups
  libstrongswan-standard-plugins
  # guest metadata service (the agent runs it; the package's own unit is never started)
  nginx-light
  # BGP: bgpd in each router holding routed prefixes, zebra + bgpd as the
  # all-in-one's edge speaker (the agent and aio/bgp_edge.py run them)
  frr
  # redundant routers: VRRP and connection tracking sync (the agent runs both)
  keepalived conntrackd
  # real clients the tests and the demo use (cloud-init: its datasources' crawlers
  # read the router's metadata service; never run as the host's own boot service)
  cloud-init
  bind9-dnsutils busybox udhcpc isc-dhcp-client curl socat ncat tcpdump iperf3 tshark traceroute
  # benchmarks: HTTP load (ab)
  apache2-utils
  # python
  python3 python3-venv python3-dev gcc
  # compute: OVS (userspace datapath), libvirt + QEMU (TCG), libvirt-python's
  # build deps, and what images/guest/build.sh uses (cpio, qemu-img)
  openvswitch-switch libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
  libvirt-dev pkg-config cpio
  # images/router/build.sh and images/cloud-guest/build.sh: the router appliance
  # and the cloud-init guest (rootfs, ext4 without mounting)
  mmdebstrap e2fsprogs
  # the cloud-init guest's test logs in with ssh (keys from ssh-keygen)
  openssh-client
  # PostgreSQL: the store's tests run on it too (a scratch cluster, see test.sh)
  postgresql
)

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: run as root (network namespaces, daemons and apt need it)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # No default PostgreSQL cluster listening on a port: tests make their own.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/cloudnet.conf
  # Package installation starts no daemon (there may be no init system at
  # all, as in CI): cloudnet's own scripts start OVS, libvirt and the rest.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # cloud-init installed here is the tests' client, not this host's boot
  # service: keep it from running at the next boot (a host that had it
  # before keeps its own).
  # frr's own service (zebra in the host's namespace) is not cloudnet's.
  if printf '%s\n' "${missing[@]}" | grep -qx frr && command -v systemctl >/dev/null; then
    systemctl disable -q frr.service 2>/dev/null || true
  fi
  if printf '%s\n' "${missing[@]}" | grep -qx cloud-init; then
    mkdir -p /etc/cloud
    touch /etc/cloud/cloud-init.disabled
  fi
fi

VENV=${CLOUDNET_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.cloudnet-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[dev,pg]'
  touch "$stamp"
fi
echo "bootstrap: ready ($VENV)"
