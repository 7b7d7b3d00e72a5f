from __future__ import annotations

import os

import pytest

from common import netns


def pytest_configure(config):
    # Like every daemon: this process runs gRPC servers next to namespace work.
    netns.install()


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (network namespaces)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)
