"""A dnsmasq stopped by a host limit says which limit, with its value."""

from __future__ import annotations

import os

from router.services.dnsmasq import limit_hint


def test_the_inotify_instance_limit_is_named_with_its_value(tmp_path: object) -> None:
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "fs", "inotify"))
    with open(os.path.join(root, "fs", "inotify", "max_user_instances"), "w") as f:
        f.write("128\n")
    out = "dnsmasq: failed to create inotify: Too many open files"
    assert limit_hint(out, "dnsmasq", root) == (
        " (host limit fs.inotify.max_user_instances = 128 inotify instances per user: "
        "every router's dnsmasq takes one, shared by user dnsmasq)")


def test_a_watch_failure_names_the_watch_limit(tmp_path: object) -> None:
    out = "dnsmasq: failed to create inotify for /x/dhcp-hosts: No space left on device"
    assert "fs.inotify.max_user_watches = ?" in limit_hint(out, "dnsmasq", str(tmp_path))


def test_other_failures_name_no_limit() -> None:
    assert limit_hint("dnsmasq: failed to bind DHCP server socket: Address in use",
                      "dnsmasq") == ""
