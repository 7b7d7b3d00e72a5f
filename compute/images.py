"""Base images a compute agent can boot: directories built like images/guest.

Each image directory holds `image.json` (images/router: `manifest.json`)
(kernel, initrd, disk, cmdline, min_memory_mib) and those files. VMs boot
the kernel + initrd directly and get a copy-on-write qcow2 overlay of the
base disk.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GUEST_DIR = os.path.join(REPO, "images", "guest", "out")
GUEST_BUILD = os.path.join(REPO, "images", "guest", "build.sh")
# Debian 12 with cloud-init and OpenSSH (images/cloud-guest): booted as
# `debian-cloud` when built (scripts/test.sh builds it; a minute cold).
CLOUD_GUEST_NAME = "debian-cloud"
DEFAULT_CLOUD_GUEST_DIR = os.path.join(REPO, "images", "cloud-guest", "out")


class ImageError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Image:
    name: str
    kernel: str
    initrd: str
    disk: str
    cmdline: str
    min_memory_mib: int
    kernel_release: str


def load(name: str, directory: str) -> Image:
    # images/guest writes image.json; images/router a manifest.json with the same keys.
    path = os.path.join(directory, "image.json")
    if not os.path.exists(path) and os.path.exists(os.path.join(directory, "manifest.json")):
        path = os.path.join(directory, "manifest.json")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ImageError(f"image {name}: cannot read {path}: {e}") from e
    files = {k: os.path.join(directory, meta[k]) for k in ("kernel", "initrd", "disk")}
    for k, file in files.items():
        if not os.path.isfile(file):
            raise ImageError(f"image {name}: {k} {file} missing")
    return Image(name=name, cmdline=str(meta.get("cmdline", "console=ttyS0")),
                 min_memory_mib=int(meta.get("min_memory_mib", 64)),
                 kernel_release=str(meta.get("kernel_release", "")), **files)


def built(directory: str) -> bool:
    """Whether an image directory holds a built image (its metadata file)."""
    return any(os.path.exists(os.path.join(directory, f)) for f in ("image.json", "manifest.json"))


def default_images() -> dict[str, str]:
    """name -> directory of the images a compute agent boots when given none:
    the tiny guest, and the cloud-init guest once it is built."""
    found = {"tiny": DEFAULT_GUEST_DIR}
    if built(DEFAULT_CLOUD_GUEST_DIR):
        found[CLOUD_GUEST_NAME] = DEFAULT_CLOUD_GUEST_DIR
    return found


def build_guest(out_dir: str = DEFAULT_GUEST_DIR) -> str:
    """Build (or find up to date) the tiny guest image; returns its directory.
    One build at a time per directory (two processes that both find it out of
    date would write the same files): the second waits, then finds it built."""
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    with open(f"{out_dir}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(["bash", GUEST_BUILD, out_dir], capture_output=True, text=True,
                              check=False, timeout=600)
    if proc.returncode:
        raise ImageError(f"{GUEST_BUILD} failed: {proc.stdout}{proc.stderr}")
    return out_dir


def create_overlay(base: str, overlay: str) -> None:
    """A qcow2 overlay whose backing file is the (read-only) base disk."""
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
                           overlay], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise ImageError(f"overlay {overlay}: {proc.stderr.strip()}")
