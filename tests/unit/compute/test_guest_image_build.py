"""Two processes that ask for the guest image at once (two test workers, two
compute agents on one host) build it one at a time, never both into the same
directory."""

from __future__ import annotations

import os
import stat
import threading

from compute import images

# Stands in for images/guest/build.sh: fails if another build is under way
# in the same directory, else takes a moment and writes the image.
BUILD = """#!/bin/sh
out="$1"
mkdir -p "$out"
if [ -e "$out/building" ]; then echo "two builds at once" >&2; exit 1; fi
touch "$out/building"
sleep 0.3
echo '{}' > "$out/image.json"
rm "$out/building"
"""


def test_builds_asked_at_once_run_one_after_the_other(tmp_path, monkeypatch) -> None:
    script = tmp_path / "build.sh"
    script.write_text(BUILD)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(images, "GUEST_BUILD", str(script))
    out = str(tmp_path / "out")
    errors: list[Exception] = []

    def build() -> None:
        try:
            assert images.build_guest(out) == out
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert os.path.exists(os.path.join(out, "image.json"))
