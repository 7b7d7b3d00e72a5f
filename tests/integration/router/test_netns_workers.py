"""The agent's namespace calls run on reused threads: each call runs in the
namespace it names, and no thread stays in one afterwards (a deleted
router's namespace is freed, not kept alive by an idle thread)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from common import netns, nsthread

pytestmark = pytest.mark.integration


def inode(path: str) -> int:
    return os.stat(path).st_ino


def thread_namespaces() -> set[int]:
    return {inode(f"/proc/self/task/{t}/ns/net") for t in os.listdir("/proc/self/task")}


def test_calls_run_in_their_namespace_and_leave_none_behind() -> None:
    names = [f"nw{uuid.uuid4().hex[:8]}" for _ in range(3)]
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        want = {name: inode(f"/run/netns/{name}") for name in names}
        for _ in range(3):  # the same threads, reused, in turn in each namespace
            for name in names:
                assert netns.run_in_netns(
                    name, lambda: inode("/proc/thread-self/ns/net")) == want[name]

        def nested() -> tuple[int, int]:
            inner = netns.run_in_netns(names[1], lambda: inode("/proc/thread-self/ns/net"))
            return inode("/proc/thread-self/ns/net"), inner

        assert netns.run_in_netns(names[0], nested) == (want[names[0]], want[names[1]])
        with pytest.raises(ZeroDivisionError):
            netns.run_in_netns(names[2], lambda: 1 // 0)
        with pytest.raises(FileNotFoundError):
            netns.run_in_netns(f"nw-absent-{uuid.uuid4().hex[:6]}", lambda: None)
        # Every thread of this process is back home: none holds a namespace.
        assert not thread_namespaces() & set(want.values())
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_worker_is_home_before_its_caller_has_the_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller may delete the namespace as soon as it has its answer: the
    worker must have left it by then, at every call, not eventually. The
    way home is slowed down (a loaded machine's scheduler does the same) so
    that a reply sent before it is seen."""
    home_fd = nsthread._home_fd

    def slow_home_fd() -> int:
        time.sleep(0.02)
        return home_fd()

    monkeypatch.setattr(nsthread, "_home_fd", slow_home_fd)
    names = [f"nw{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        theirs = {inode(f"/run/netns/{name}") for name in names}
        inside = 0
        for i in range(10):
            netns.run_in_netns(names[i % 2], lambda: None)
            inside += bool(thread_namespaces() & theirs)
        assert inside == 0
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_sysctls_are_written_in_the_namespace_and_a_missing_key_is_refused_unless_allowed(
) -> None:
    name = f"nw{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        netns.write_sysctls(name, {"net.ipv4.ip_forward": "1"})
        out = subprocess.run(["ip", "netns", "exec", name, "cat",
                              "/proc/sys/net/ipv4/ip_forward"], capture_output=True, text=True)
        assert out.stdout.strip() == "1"
        # As on a kernel booted without IPv6: its keys are not there.
        absent = {"net.ipv6.conf.no-such-link.disable_ipv6": "1"}
        with pytest.raises(FileNotFoundError):
            netns.write_sysctls(name, absent)
        netns.write_sysctls(name, absent, missing_ok=True)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_namespace_is_removed_as_ip_netns_del_does_and_bad_names_are_refused() -> None:
    name = f"rm{uuid.uuid4().hex[:8]}"
    netns.ensure_netns(name)
    try:
        assert netns.netns_exists(name)
        assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                      check=True).stdout
        netns.remove_netns(name)
        assert not netns.netns_exists(name)
        assert not os.path.exists(f"/run/netns/{name}")
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True, check=True).stdout
        netns.remove_netns(name)  # gone already: nothing to do
        # Past a name: never a path outside /run/netns.
        assert not netns.netns_exists("../netns")
        with pytest.raises(ValueError, match="name"):
            netns.remove_netns("../x")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
