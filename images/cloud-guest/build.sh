#!/usr/bin/env bash
# Build the cloud-init test guest: Debian 12 (mmdebstrap, minbase, no
# recommends) with the cloud kernel, systemd, cloud-init, OpenSSH's server
# and ifupdown + isc-dhcp-client (what Debian 12's own cloud images use for
# cloud-init's network configuration), set up to find its identity on
# cloudnet's router through cloud-init's CloudStack datasource (the router
# found by its `data-server` DNS name, the DHCP server as the fallback; the
# one-time password from the password server on 8080). Nothing cloudnet's own
# is in it: it is what a tenant would upload.
#
#   images/cloud-guest/build.sh [OUT_DIR]      (default: images/cloud-guest/out)
#
# Output: disk.qcow2 (ext4 on the whole disk, no partition table: the kernel
# is booted directly), vmlinuz, initrd.img (busybox + the virtio modules, the
# router appliance's initramfs/init) and image.json (compute/images.py reads
# it; package versions, sizes, the inputs' hash). Nothing is rebuilt when the
# inputs' hash is unchanged: the package list, this script, the files under
# rootfs/ and the initramfs's init.
#
# Caches (images/cloud-guest/.cache, gitignored): the .debs (seeded with hard
# links from the router image's cache, so a package both images hold is
# downloaded once) and the base root file system as a tarball keyed by the
# package list. Reaches only the Debian mirror of the host's apt sources.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-$HERE/out}
CACHE=${CLOUDNET_CLOUD_GUEST_CACHE:-$HERE/.cache}
ROUTER_DEBS=$REPO/images/router/.cache/debs
INIT=$REPO/images/router/initramfs/init
SOURCES=${CLOUDNET_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
PACKAGES=(
  linux-image-cloud-amd64 initramfs-tools systemd systemd-sysv udev kmod
  iproute2 netbase ifupdown isc-dhcp-client
  cloud-init openssh-server sudo
  # the CloudStack password client of cloud-init runs wget
  wget
)
# Debian's initramfs (kept in /boot, unused): small (MODULES=list).
INITRD_MODULES="virtio_pci virtio_blk ext4"
# The busybox initramfs that boots the guest: disk and NIC drivers.
BOOT_MODULES="virtio_pci virtio_blk virtio_net"
# Units a short-lived test guest does not want (each costs seconds under TCG).
DISABLE_UNITS="apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
  fstrim.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer getty@tty1.service \
  serial-getty@ttyS0.service getty-static.service systemd-pstore.service \
  systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount dev-hugepages.mount \
  dev-mqueue.mount sys-fs-fuse-connections.mount modprobe@drm.service modprobe@fuse.service \
  modprobe@efi_pstore.service modprobe@dm_mod.service modprobe@loop.service \
  systemd-random-seed.service systemd-remount-fs.service"
PY=${CLOUDNET_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
. "$REPO/images/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "cloud guest image: run as root" >&2; exit 1; }
for tool in mmdebstrap mkfs.ext4 qemu-img cpio; do
  command -v "$tool" >/dev/null || { echo "cloud guest image: $tool missing (scripts/bootstrap.sh)" >&2; exit 1; }
done
mkdir -p "$OUT" "$CACHE/debs"
t0=$(date +%s.%N)

base_key=$( { echo "${PACKAGES[*]}|$INITRD_MODULES"; sed -n '/^# ---- base/,/^# ---- end base/p' "$0"; } \
  | sha256sum | cut -c1-16)
bbver=$(apt-cache policy busybox-static | awk '/Candidate:/ {print $2}')
[ -n "$bbver" ] || { echo "cloud guest image: no busybox-static candidate (apt-get update?)" >&2; exit 1; }
inputs=$( { echo "$base_key $BOOT_MODULES $DISABLE_UNITS busybox-static=$bbver"; cat "$0" "$REPO/images/lib.sh" "$INIT";
            (cd "$HERE" && find rootfs -type f | sort | xargs sha256sum); } \
          | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/image.json" ] && grep -q "\"inputs\": \"$inputs\"" "$OUT/image.json" \
   && [ -f "$OUT/disk.qcow2" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ]; then
  echo "cloud guest image: up to date ($OUT, inputs ${inputs:0:12})"
  exit 0
fi
work=$(mktemp -d /var/tmp/cloudnet-cloud-guest.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---- base root file system (cached by the package list) ---------------------
base=$CACHE/base-$base_key.tar
base_cached=true
if [ ! -f "$base" ]; then
  base_cached=false
  # The router image's .debs, by hard link (same file system) or copy: apt
  # takes from the archive what matches its candidates, downloads the rest.
  if [ -d "$ROUTER_DEBS" ]; then
    cp -n -l "$ROUTER_DEBS"/*.deb "$CACHE/debs/" 2>/dev/null \
      || cp -n "$ROUTER_DEBS"/*.deb "$CACHE/debs/" 2>/dev/null || true
  fi
  include=$(IFS=,; echo "${PACKAGES[*]}" | tr ' ' ',')
  mmdebstrap --variant=minbase --include="$include" \
    --aptopt='Apt::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --skip=download/empty --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $CACHE/debs /var/cache/apt/archives/" \
    --essential-hook='mkdir -p "$1"/etc/initramfs-tools/conf.d' \
    --essential-hook="echo MODULES=list > \"\$1\"/etc/initramfs-tools/conf.d/cloudnet.conf" \
    --essential-hook="for m in $INITRD_MODULES; do echo \$m; done >> \"\$1\"/etc/initramfs-tools/modules" \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE/debs" \
    bookworm "$work/base.tar" "$SOURCES"
  rm -f "$CACHE"/base-*.tar
  mv "$work/base.tar" "$base"
fi
# ---- end base -------------------------------------------------------------------
t_base=$(date +%s.%N)

# ---- assemble --------------------------------------------------------------------
root=$work/root
mkdir "$root"
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 chroot "$root" "$@"; }
tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base"
cp -a "$HERE/rootfs/." "$root/"
in_root /bin/sh -ec "
  echo localhost > /etc/hostname
  printf '/dev/vda / ext4 defaults,noatime,errors=remount-ro 0 0\n' > /etc/fstab
  passwd -l root >/dev/null
  for u in $DISABLE_UNITS; do systemctl mask -q \$u 2>/dev/null || true; done
  systemctl set-default -q multi-user.target
"
# Every VM makes its own: host keys (cloud-init's ssh module), machine ID.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
release=$(ls "$root/lib/modules")
cp "$root/boot/vmlinuz-$release" "$work/vmlinuz"

# The initramfs: busybox + the virtio modules + the router appliance's init
# (mount /dev/vda, switch_root to systemd), without initramfs-tools' udev pass
# (images/lib.sh); busybox taken from the router image's cache when it has it.
bbdeb=$(image_busybox_deb "$CACHE" "$bbver" "$REPO/images/router/.cache")
image_initramfs "$root" "$release" "$work" "$bbdeb" "$INIT" $BOOT_MODULES

in_root dpkg-query -W -f '${Package}\t${Version}\n' > "$work/debs.tsv"

# ---- disk ------------------------------------------------------------------------
image_disk "$root" "$work" cloud-root 256
t_end=$(date +%s.%N)

"$PY" - "$work" "$inputs" "$release" "$rootfs_mib" "$fs_mib" "$t0" "$t_base" "$t_end" \
       "$base_cached" "$base_key" <<'PYEOF'
import json, os, sys
work, inputs, release, rootfs_mib, fs_mib, t0, t_base, t_end, base_cached, base_key = sys.argv[1:]
debs = dict(line.split("\t", 1) for line in open(os.path.join(work, "debs.tsv")).read().splitlines())
want = ["linux-image-" + release, "systemd", "cloud-init", "openssh-server", "ifupdown",
        "isc-dhcp-client", "python3"]
image = {
    "name": "debian-cloud",
    "inputs": inputs,
    "base_key": base_key,
    "kernel": "vmlinuz", "initrd": "initrd.img", "disk": "disk.qcow2",
    # net.ifnames=0: eth0, as cloud-init's fallback network configuration names it.
    # quiet: every console line is slow under TCG (an emulated UART); cloud-init
    # writes its host keys and final message to the console regardless.
    "cmdline": "root=/dev/vda rw console=ttyS0 panic=-1 net.ifnames=0 quiet",
    "kernel_release": release,
    "min_memory_mib": 384,
    "versions": {k: debs.get(k, "") for k in want},
    "sizes_mib": {
        "rootfs": int(rootfs_mib), "filesystem": int(fs_mib),
        "disk_qcow2": round(os.path.getsize(os.path.join(work, "disk.qcow2")) / 2**20, 1),
        "initrd": round(os.path.getsize(os.path.join(work, "initrd.img")) / 2**20, 1),
    },
    "build_seconds": {"total": round(float(t_end) - float(t0), 1),
                      "base": round(float(t_base) - float(t0), 1),
                      "base_cached": base_cached == "true"},
    "packages": debs,
}
with open(os.path.join(work, "image.json"), "w") as f:
    json.dump(image, f, indent=1, sort_keys=True)
    f.write("\n")
PYEOF
for f in vmlinuz initrd.img disk.qcow2 image.json; do mv "$work/$f" "$OUT/$f"; done
echo "cloud guest image: built $OUT ($release, disk $(du -h "$OUT/disk.qcow2" | cut -f1)," \
     "$(awk "BEGIN {printf \"%.0f\", $t_end - $t0}") s)"
