#!/usr/bin/env bash
# Build the tiny cloudnet test guest from Debian packages, without installing
# anything into the host: the kernel of linux-image-cloud-amd64 (+ the virtio
# modules it needs) and a busybox-static initramfs whose /init runs a DHCP
# client on every NIC, prints CLOUDNET-LEASE markers on the serial console,
# answers ping and serves HTTP (GET / returns the hostname).
#
#   images/guest/build.sh [OUT_DIR]     (default: images/guest/out)
#
# Output: vmlinuz, initrd.img, disk.qcow2 (a small base disk VMs overlay
# copy-on-write) and image.json. Skipped when the inputs' hash is unchanged.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/out}
CACHE=$HERE/.cache
# What the guest needs; their dependencies come along, in load order.
MODULES=(virtio_pci virtio_net virtio_blk 8021q)
mkdir -p "$OUT" "$CACHE"

# The kernel package the metapackage points at today, and busybox-static.
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "guest: cannot resolve linux-image-cloud-amd64 (apt-get update?)" >&2; exit 1; }
kver=$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')
bver=$(apt-cache policy busybox-static | awk '/Candidate:/ {print $2}')

inputs=$( { echo "$kpkg=$kver busybox-static=$bver ${MODULES[*]}"; cat "$0";
            (cd "$HERE/rootfs" && find . -type f | sort | xargs sha256sum); } | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/image.json" ] && grep -q "\"inputs\": \"$inputs\"" "$OUT/image.json"; then
  echo "guest: up to date ($OUT)"
  exit 0
fi

fetch() {  # fetch PKG: the .deb in the cache (apt-get download, no install)
  local deb
  deb=$(ls "$CACHE/${1}_"*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ] || [[ "$deb" != *"_${2//:/%3a}_"* ]]; then
    rm -f "$CACHE/${1}_"*.deb
    (cd "$CACHE" && apt-get download -q "$1=$2" >/dev/null 2>&1 || apt-get download -q "$1" >/dev/null)
    deb=$(ls "$CACHE/${1}_"*.deb | head -1)
  fi
  echo "$deb"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$(fetch "$kpkg" "$kver")" "$work/k"
dpkg-deb -x "$(fetch busybox-static "$bver")" "$work/b"
release=$(ls "$work/k/lib/modules")

root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,run,tmp,lib/modules,www}
cp "$work/b/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
: > "$root/etc/modules"
add_module() {  # add_module NAME: its dependencies first (modinfo), then itself
  local m=$1 ko dep
  grep -qx "$m" "$root/etc/modules" && return 0
  ko=$(find "$work/k/lib/modules/$release" -name "$m.ko*" | head -1)
  [ -n "$ko" ] || { echo "guest: module $m not in $kpkg" >&2; exit 1; }
  for dep in $(modinfo -F depends "$ko" | tr , ' '); do add_module "$dep"; done
  case "$ko" in
    *.xz) xz -dc "$ko" > "$root/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$ko" > "$root/lib/modules/$m.ko" ;;
    *) cp "$ko" "$root/lib/modules/$m.ko" ;;
  esac
  echo "$m" >> "$root/etc/modules"
}
for m in "${MODULES[@]}"; do add_module "$m"; done
cp -a "$HERE/rootfs/." "$root/"
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$OUT/initrd.img.tmp"
cp "$work/k/boot/vmlinuz-$release" "$OUT/vmlinuz.tmp"
qemu-img create -q -f qcow2 "$OUT/disk.qcow2.tmp" 64M
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv "$OUT/disk.qcow2.tmp" "$OUT/disk.qcow2"
cat > "$OUT/image.json" <<JSON
{"name": "tiny", "kernel": "vmlinuz", "initrd": "initrd.img", "disk": "disk.qcow2",
 "cmdline": "console=ttyS0 panic=-1 quiet", "kernel_release": "$release",
 "busybox": "$bver", "min_memory_mib": 64, "inputs": "$inputs"}
JSON
echo "guest: built $OUT ($release, initrd $(du -h "$OUT/initrd.img" | cut -f1))"
