"""A daemon's record (pid, start time) names that one process: a pid reused
by a later process does not match; a namespace's processes are found by the
namespace's inode, not by command line."""

from __future__ import annotations

import os
import subprocess
import sys

from router.lib import proc


def test_a_record_names_the_process_that_started_not_its_pid(tmp_path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = str(tmp_path / "procs" / "daemon")
        proc.write_record(record, child.pid)
        assert oct(os.stat(record).st_mode & 0o777) == "0o600"
        assert proc.recorded(record) == child.pid
        # The same pid with another start time: another process.
        pid, started = open(record).read().split()  # noqa: SIM115
        with open(record, "w") as f:
            f.write(f"{pid} {int(started) - 1}\n")
        assert proc.recorded(record) is None
    finally:
        child.kill()
        child.wait()
    proc.write_record(record, os.getpid())
    assert proc.recorded(record) == os.getpid()
    assert proc.recorded(str(tmp_path / "none")) is None


def test_the_processes_of_a_namespace_are_found_by_its_inode() -> None:
    mine = proc.netns_pids(f"/proc/{os.getpid()}/ns/net")
    assert os.getpid() in mine
    assert proc.netns_pids("/nonexistent/netns") == []


def test_stop_all_terminates_and_never_the_caller() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert proc.stop_all({child.pid, os.getpid()}, grace=5) == [child.pid]
        child.wait(timeout=5)
        assert child.returncode == -15
    finally:
        child.kill()
        child.wait()
