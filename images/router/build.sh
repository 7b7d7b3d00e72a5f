#!/usr/bin/env bash
# Build the cloudnet router appliance: Debian 12 (mmdebstrap, minbase) with
# the cloud kernel, systemd, the router's daemons (dnsmasq, nftables, HAProxy,
# strongSwan, conntrack) and the router agent installed into /opt/cloudnet
# from the router's own wheel, cloudnet-router (scripts/router_wheel.py: the
# router agent, common/ and the router's API stubs, with only the Python
# dependencies those import, from PyPI).
#
#   images/router/build.sh [OUT_DIR]      (default: images/router/out)
#
# Output: disk.qcow2 (ext4 root file system on the whole disk, no partition
# table: the kernel is booted directly), vmlinuz, initrd.img and
# manifest.json (package versions, Python packages, sizes and the hash of the
# inputs). Nothing is rebuilt when the inputs' hash is unchanged: the package
# list, this script, the files under rootfs/ and the wheel's content. The
# wheel is built from the committed tree (HEAD, or CLOUDNET_IMAGE_REV);
# CLOUDNET_IMAGE_FROM=worktree builds it from the working tree instead.
#
# Caches (images/router/.cache, gitignored): the .debs, the base root file
# system as a tarball keyed by the package list, and the Python wheels. A
# change of the project's code only re-runs the last stage (venv + disk).
# Reaches only the Debian mirror of the host's apt sources and PyPI.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-$HERE/out}
CACHE=${CLOUDNET_IMAGE_CACHE:-$HERE/.cache}
SOURCES=${CLOUDNET_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
PACKAGES=(
  linux-image-cloud-amd64 initramfs-tools zstd systemd systemd-sysv udev kmod
  iproute2 procps netbase nftables conntrack dnsmasq-base haproxy
  strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins
  # guest metadata service (router/services/metadata.py runs it)
  nginx-light
  # BGP (router/services/bgp.py runs bgpd; vtysh changes it in place)
  frr
  # redundant routers (router/services/keepalived.py, conntrackd.py run them)
  keepalived conntrackd
  # packet tools for the diagnostics (capture, traceroute) inside the appliance
  tcpdump traceroute iputils-ping
  python3 python3-venv
)
# Modules Debian's initramfs (kept in /boot, unused) lists (MODULES=list keeps it small).
INITRD_MODULES="virtio_pci virtio_blk ext4"
# Modules of the busybox initramfs that boots the appliance (ext4 is built in):
# the disk and the NICs' driver, so every NIC exists before systemd starts and
# nothing waits for udev (masked below) to load virtio_net; and nf_tables with
# what every router's ruleset uses (conntrack, NAT), loaded there from
# uncompressed copies rather than by a kernel-spawned modprobe each (exec +
# xz under TCG: a second of the first apply).
# virtio_console: the fault channel's virtio-serial port (tests only:
# cloudnet-faults.service runs only when the host added it).
BOOT_MODULES="virtio_pci virtio_blk virtio_net virtio_console nft_ct nft_nat nft_chain_nat"
# Units the appliance does not want at boot (the agent runs the daemons itself).
# Each costs boot time under TCG (seconds in all); none is needed by a router.
# udev too: the initramfs loads the only drivers the VM needs (virtio disk and
# NICs, also for NICs hot-plugged later), the agent finds NICs by MAC (no
# renaming wanted), and udev's coldplug loaded a dozen modules nobody uses
# (kvm, ata, crypto) on the one vCPU before the agent could start. No getty:
# root is locked. The root file system is mounted rw,noatime by the initramfs
# (no remount) and has no fsck pass.
DISABLE_UNITS="haproxy.service strongswan-starter.service nginx.service frr.service keepalived.service conntrackd.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer dpkg-db-backup.timer \
  systemd-tmpfiles-clean.timer getty@tty1.service getty-static.service systemd-logind.service \
  systemd-pstore.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
  proc-sys-fs-binfmt_misc.mount systemd-update-utmp.service systemd-update-utmp-runlevel.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount dev-hugepages.mount \
  dev-mqueue.mount sys-fs-fuse-connections.mount modprobe@drm.service modprobe@fuse.service \
  modprobe@efi_pstore.service modprobe@dm_mod.service modprobe@loop.service \
  systemd-journal-flush.service systemd-random-seed.service \
  systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
  systemd-udev-trigger.service systemd-udev-settle.service kmod-static-nodes.service \
  systemd-tmpfiles-setup-dev.service systemd-modules-load.service systemd-user-sessions.service \
  serial-getty@ttyS0.service systemd-remount-fs.service systemd-sysusers.service"
PY=${CLOUDNET_PYTHON:-$REPO/.venv/bin/python}
. "$REPO/images/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "router image: run as root" >&2; exit 1; }
for tool in mmdebstrap mkfs.ext4 qemu-img; do
  command -v "$tool" >/dev/null || { echo "router image: $tool missing (scripts/bootstrap.sh)" >&2; exit 1; }
done
mkdir -p "$OUT" "$CACHE/debs" "$CACHE/wheels"
t0=$(date +%s.%N)
work=$(mktemp -d /var/tmp/cloudnet-router-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---- inputs -------------------------------------------------------------------
# The agent's code: the committed tree (HEAD) by default, so the image is
# what git holds whatever is being edited in the working tree;
# CLOUDNET_IMAGE_FROM=worktree takes the working tree as it is instead.
src=$REPO
if [ "${CLOUDNET_IMAGE_FROM:-head}" != worktree ]; then
  src=$work/src
  mkdir "$src"
  git -C "$REPO" archive "${CLOUDNET_IMAGE_REV:-HEAD}" | tar -x -C "$src"
fi
wheel=$("$PY" "$src/scripts/router_wheel.py" --src "$src" "$work/wheel")
# The wheel's RECORD lists the sha256 of every file in it: a content hash
# that ignores the zip's timestamps.
wheel_hash=$("$PY" - "$wheel" <<'PYEOF'
import hashlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    lines = sorted(l for l in z.read(record).decode().splitlines() if "/RECORD," not in l)
print(hashlib.sha256("\n".join(lines).encode()).hexdigest())
PYEOF
)
base_key=$( { echo "${PACKAGES[*]}|$INITRD_MODULES"; sed -n '/^# ---- base/,/^# ---- end base/p' "$0"; } \
  | sha256sum | cut -c1-16)
bbver=$(apt-cache policy busybox-static | awk '/Candidate:/ {print $2}')
[ -n "$bbver" ] || { echo "router image: no busybox-static candidate (apt-get update?)" >&2; exit 1; }
inputs=$( { echo "$base_key $wheel_hash $DISABLE_UNITS busybox-static=$bbver"; cat "$0" "$REPO/images/lib.sh";
            (cd "$HERE" && find rootfs initramfs -type f | sort | xargs sha256sum); } \
          | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/manifest.json" ] && grep -q "\"inputs\": \"$inputs\"" "$OUT/manifest.json" \
   && [ -f "$OUT/disk.qcow2" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ]; then
  echo "router image: up to date ($OUT, inputs ${inputs:0:12})"
  exit 0
fi

# ---- base root file system (cached by the package list) ---------------------
base=$CACHE/base-$base_key.tar
base_cached=true
if [ ! -f "$base" ]; then
  base_cached=false
  include=$(IFS=,; echo "${PACKAGES[*]}")
  mmdebstrap --variant=minbase --include="$include" \
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

# ---- the agent's wheels (from PyPI once, then from the cache) ------------------
"$PY" -m pip download -q --only-binary=:all: --no-index --find-links "$CACHE/wheels" \
    -d "$CACHE/wheels" "$wheel" >/dev/null 2>&1 \
  || "$PY" -m pip download -q --only-binary=:all: -d "$CACHE/wheels" "$wheel"
rm -f "$CACHE"/wheels/cloudnet-*.whl "$CACHE"/wheels/cloudnet_router-*.whl
# Only the wheels this one needs go into the image (the cache may hold more).
"$PY" -m pip download -q --only-binary=:all: --no-index --find-links "$CACHE/wheels" \
    -d "$work/wheels" "$wheel"

# ---- assemble --------------------------------------------------------------------
root=$work/root
mkdir "$root"
# Commands in the image get a clean environment (not the host's PIP_*, LC_*...).
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 chroot "$root" "$@"; }
tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base"
cp -a "$HERE/rootfs/." "$root/"
mkdir -p "$root/tmp/wheels"
cp "$work"/wheels/*.whl "$root/tmp/wheels/"
in_root /usr/bin/python3 -m venv /opt/cloudnet
in_root /opt/cloudnet/bin/pip install -q --no-index --find-links /tmp/wheels \
  --no-compile "/tmp/wheels/$(basename "$wheel")"
# The unit's program starts (its imports resolve in the image).
in_root /opt/cloudnet/bin/cloudnet-router-agent --help >/dev/null
# Byte-compile now (a read-only-ish first boot under TCG must not pay for it).
# unchecked-hash: never revalidated against the sources (no stat, no rewrite).
in_root /opt/cloudnet/bin/python -m compileall -q -j0 --invalidation-mode unchecked-hash \
  /opt/cloudnet/lib >/dev/null || true
rm -rf "$root/tmp/wheels" "$root"/opt/cloudnet/lib/python3*/site-packages/pip/_vendor/rich/__pycache__
# The fault channel's responder (tests only; router/agent/fault_responder.py,
# standard library only) where its unit runs it with the system's python3.
install -m 0755 "$root"/opt/cloudnet/lib/python3*/site-packages/router/agent/fault_responder.py \
  "$root/usr/local/sbin/cloudnet-fault-responder"
# The agent's templates compiled too (router/lib/templating.py; the agent's unit
# sets CLOUDNET_TEMPLATE_CACHE).
mkdir -p "$root/opt/cloudnet/template-cache"
in_root env CLOUDNET_TEMPLATE_CACHE=/opt/cloudnet/template-cache /opt/cloudnet/bin/python -c '
from router.lib import templating
env = templating.environment()
for name in env.list_templates():
    env.get_template(name)
'
in_root /bin/sh -ec "
  echo router > /etc/hostname
  printf '/dev/vda / ext4 defaults,noatime,errors=remount-ro 0 0\n' > /etc/fstab
  passwd -l root >/dev/null
  systemctl enable -q cloudnet-boot.service cloudnet-router-agent.service cloudnet-faults.service
  for u in $DISABLE_UNITS; do systemctl mask -q \$u 2>/dev/null || true; done
  # Generators too (systemd.generator(7): masked by a /dev/null link in
  # /etc/systemd/system-generators): PID 1 runs all of them before any unit,
  # 1.5 s under TCG, and none has anything to do here (no fstab beyond the
  # root the initramfs mounted, no getty, crypt, GPT, SysV or rc.local).
  mkdir -p /etc/systemd/system-generators
  for g in /lib/systemd/system-generators/*; do ln -sf /dev/null /etc/systemd/system-generators/\${g##*/}; done
  systemctl set-default -q multi-user.target
"
: > "$root/etc/machine-id"   # a fresh one per boot (systemd creates it)
release=$(ls "$root/lib/modules")
cp "$root/boot/vmlinuz-$release" "$work/vmlinuz"

# The initramfs: busybox + the virtio disk's modules (ext4 is built into the
# cloud kernel) + initramfs/init (images/lib.sh). Debian's initramfs-tools one
# stays in the image's /boot.
bbdeb=$(image_busybox_deb "$CACHE" "$bbver")
image_initramfs "$root" "$release" "$work" "$bbdeb" "$HERE/initramfs/init" $BOOT_MODULES

# Versions for the manifest.
in_root dpkg-query -W -f '${Package}\t${Version}\n' > "$work/debs.tsv"
in_root /opt/cloudnet/bin/pip list --format=freeze 2>/dev/null > "$work/pip.txt"
venv_mib=$(du -sm --apparent-size "$root/opt/cloudnet" | cut -f1)

# ---- disk ------------------------------------------------------------------------
image_disk "$root" "$work" cloudnet-root 512
t_end=$(date +%s.%N)

"$PY" - "$work" "$OUT" "$inputs" "$release" "$rootfs_mib" "$fs_mib" "$t0" "$t_base" "$t_end" \
       "$base_cached" "$wheel_hash" "$base_key" "$venv_mib" <<'PYEOF'
import json, os, sys
work, out, inputs, release, rootfs_mib, fs_mib, t0, t_base, t_end, base_cached, wheel_hash, base_key, venv_mib = sys.argv[1:]
debs = dict(line.split("\t", 1) for line in open(os.path.join(work, "debs.tsv")).read().splitlines())
pips = dict(line.split("==", 1) for line in open(os.path.join(work, "pip.txt")).read().splitlines() if "==" in line)
want = ["linux-image-" + release, "systemd", "iproute2", "nftables", "dnsmasq-base", "haproxy",
        "strongswan-charon", "strongswan-swanctl", "conntrack", "python3"]
manifest = {
    "name": "cloudnet-router",
    "inputs": inputs,
    "wheel_sha256": wheel_hash,
    "base_key": base_key,
    "kernel": "vmlinuz", "initrd": "initrd.img", "disk": "disk.qcow2",
    "cmdline": "root=/dev/vda rw console=ttyS0 panic=-1 quiet",
    "kernel_release": release,
    "min_memory_mib": 512,
    "versions": {k: debs.get(k, "") for k in want}
                | {"cloudnet-router": pips.get("cloudnet-router", "")},
    "sizes_mib": {
        "rootfs": int(rootfs_mib), "filesystem": int(fs_mib), "opt_cloudnet": int(venv_mib),
        "disk_qcow2": round(os.path.getsize(os.path.join(work, "disk.qcow2")) / 2**20, 1),
        "vmlinuz": round(os.path.getsize(os.path.join(work, "vmlinuz")) / 2**20, 1),
        "initrd": round(os.path.getsize(os.path.join(work, "initrd.img")) / 2**20, 1),
    },
    "build_seconds": {"total": round(float(t_end) - float(t0), 1),
                      "base": round(float(t_base) - float(t0), 1),
                      "base_cached": base_cached == "true"},
    "packages": debs,
    "python_packages": pips,
}
with open(os.path.join(work, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")
PYEOF
for f in vmlinuz initrd.img disk.qcow2 manifest.json; do mv "$work/$f" "$OUT/$f"; done
echo "router image: built $OUT ($release, disk $(du -h "$OUT/disk.qcow2" | cut -f1)," \
     "$(awk "BEGIN {printf \"%.0f\", $t_end - $t0}") s)"
