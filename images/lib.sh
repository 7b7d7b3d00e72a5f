# Steps both image builders (images/router, images/cloud-guest) share: the
# busybox initramfs that boots a directly booted kernel, and the disk made
# from the root directory. Sourced, never run; each builder hashes this file
# into its inputs, so a change here rebuilds both images.

# image_busybox_deb CACHE VERSION [SEED_DIR]: prints the busybox-static .deb of
# VERSION in CACHE, downloading it (or copying it from SEED_DIR, another
# image's cache) when CACHE holds none or another version.
image_busybox_deb() {
  local cache=$1 version=$2 seed=${3:-} deb
  deb=$(ls "$cache"/busybox-static_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ] || [[ "$deb" != *"_${version//:/%3a}_"* ]]; then
    rm -f "$cache"/busybox-static_*.deb
    deb=""
    if [ -n "$seed" ]; then
      deb=$(ls "$seed"/busybox-static_*"${version//:/%3a}"_*.deb 2>/dev/null | head -1 || true)
    fi
    if [ -n "$deb" ]; then
      cp "$deb" "$cache/"
    else
      (cd "$cache" && apt-get download -q "busybox-static=$version" >/dev/null) || return 1
    fi
    deb=$(ls "$cache"/busybox-static_*.deb | head -1)
  fi
  echo "$deb"
}

# image_initramfs ROOT RELEASE WORK BUSYBOX_DEB INIT MODULES...: writes
# WORK/initrd.img: busybox, INIT as /init, and uncompressed copies of MODULES
# and their dependencies from ROOT's kernel RELEASE, listed in load order in
# /etc/modules with the options ROOT's modprobe.d gives them (modprobe never
# loads these modules, the initramfs does). Debian's initramfs-tools one runs
# udev first: seconds more to systemd under TCG.
image_initramfs() {
  local root=$1 release=$2 work=$3 bbdeb=$4 init=$5
  shift 5
  local ird=$work/initramfs ko name opts
  mkdir -p "$ird/bin" "$ird/etc" "$ird/lib/modules"
  dpkg-deb --fsys-tarfile "$bbdeb" | tar -x -C "$work" ./bin/busybox
  mv "$work/bin/busybox" "$ird/bin/busybox"
  : > "$ird/etc/modules"
  for ko in $(modprobe -d "$root" -S "$release" --show-depends -a "$@" \
              | awk '$1 == "insmod" {print $2}'); do
    [ -f "$ko" ] || ko=$root$ko
    name=$(basename "$ko"); name=${name%%.ko*}
    grep -q "^$name\( \|\$\)" "$ird/etc/modules" && continue
    case "$ko" in
      *.xz) xz -dc "$ko" > "$ird/lib/modules/$name.ko" ;;
      *.zst) zstd -qdc "$ko" > "$ird/lib/modules/$name.ko" ;;
      *) cp "$ko" "$ird/lib/modules/$name.ko" ;;
    esac
    # (a glob that matches nothing makes cat fail: not an error here)
    opts=$( { cat "$root"/etc/modprobe.d/*.conf "$root"/lib/modprobe.d/*.conf 2>/dev/null || true; } \
           | awk -v m="$name" '$1 == "options" && $2 == m {$1 = $2 = ""; print}' | xargs)
    echo "$name${opts:+ $opts}" >> "$ird/etc/modules"
  done
  [ -s "$ird/etc/modules" ] || { echo "image: no initramfs modules found for $*" >&2; return 1; }
  cp "$init" "$ird/init"
  (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.img"
}

# image_disk ROOT WORK LABEL SPARE_MIB: WORK/disk.qcow2, an ext4 file system
# made from ROOT (mke2fs -d: no loop device, no mount) on the whole disk with
# 30 % + SPARE_MIB to spare for state and logs; qcow2 stores only the blocks in
# use. Sets rootfs_mib and fs_mib for the builder's manifest.
image_disk() {
  local root=$1 work=$2 label=$3 spare=$4
  rootfs_mib=$(du -sm --apparent-size "$root" | cut -f1)
  fs_mib=$(( rootfs_mib * 13 / 10 + spare ))
  mkfs.ext4 -q -F -L "$label" -E lazy_itable_init=0 -d "$root" "$work/root.img" "${fs_mib}M"
  qemu-img convert -q -f raw -O qcow2 "$work/root.img" "$work/disk.qcow2"
  rm -f "$work/root.img"
}
