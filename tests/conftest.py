"""Every test runs with the processes it starts checked against its markers.

See lab/markers.py: a test that starts the real server or client, a network
namespace, Chromium or Xvfb without the marker that keeps it out of the fast
loop fails, naming the marker to add.
"""

from __future__ import annotations

from typing import Iterator, Optional

import pytest

from lab.markers import processes_checked


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Iterator[None]:
    with processes_checked(item.nodeid, {mark.name for mark in item.iter_markers()}):
        yield
