from __future__ import annotations

from router.runtime import router_netns_name


def test_router_netns_name() -> None:
    assert router_netns_name("cn", "0123456789abcdef") == "cnr-0123456789ab"
    assert len(router_netns_name("t12345abcd", "f" * 36)) <= 32
