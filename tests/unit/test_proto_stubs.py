"""The committed stubs are exactly what scripts/gen-proto.sh makes from proto/."""

from __future__ import annotations

import filecmp
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_stubs_match_proto_sources(tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "proto", work / "proto")
    shutil.copytree(ROOT / "scripts", work / "scripts")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(work / "scripts" / "gen-proto.sh")], cwd=work, env=env,
                   check=True, capture_output=True)
    generated = sorted(p.relative_to(work) for p in (work / "proto").rglob("*_pb2*.py*"))
    assert generated, "no stubs were generated"
    for rel in generated:
        assert filecmp.cmp(work / rel, ROOT / rel, shallow=False), (
            f"{rel} is stale: run scripts/gen-proto.sh")
