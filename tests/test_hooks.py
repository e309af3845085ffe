"""Both sides' hooks into aiortc: every check passes on the pinned aiortc, and a
mismatched aiortc stops each program at start with one line and exit 1.

The programs are the real ones (``server/server.py``, ``client/client.py``),
started through a small ``-c`` wrapper that breaks one part of aiortc first:
its version, or one private method the hooks rely on.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from aiortc import RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpreceiver import TimestampMapper

from client.media import hooks as client_hooks
from lab.programs import ROOT, free_port
from protocol.aiortc_internals import IncompatibleAiortcError
from server.media import hooks as server_hooks

#: Runs the program named by argv[1] with the rest of argv, after ``BREAK``.
WRAPPER = textwrap.dedent(
    """
    import runpy, sys
    {patch}
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)

BREAK_VERSION = "import aiortc; aiortc.__version__ = '0.0.0'"
#: The sender no longer keeps the last RTP timestamp it sent (server.media.rtp_origin).
BREAK_SENDER = textwrap.dedent(
    """
    from aiortc import RTCRtpSender
    async def _run_rtp(self, parameters): pass
    RTCRtpSender._run_rtp = _run_rtp
    """
)
#: The jitter buffer no longer hands over through _remove_frame (fast_jitter_buffer).
BREAK_RECEIVER = textwrap.dedent(
    """
    from aiortc.jitterbuffer import JitterBuffer
    def add(self, packet): return False, None
    JitterBuffer.add = add
    """
)


def test_every_check_passes_on_the_pinned_aiortc() -> None:
    server_hooks.check_hooks()
    client_hooks.check_hooks()


def test_a_changed_sender_fails_the_server_check_on_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def run_rtp(self: object, parameters: object) -> None:
        pass

    monkeypatch.setattr(RTCRtpSender, "_run_rtp", run_rtp)
    with pytest.raises(IncompatibleAiortcError) as raised:
        server_hooks.check_hooks()
    assert "\n" not in str(raised.value)
    assert "_RTCRtpSender__rtp_timestamp" in str(raised.value)


@pytest.mark.parametrize(
    "part, replacement",
    [
        (JitterBuffer, ("add", lambda self, packet: (False, None))),
        (TimestampMapper, ("map", lambda self, timestamp: timestamp)),
    ],
    ids=["jitter-buffer", "timestamp-mapper"],
)
def test_a_changed_receiver_fails_the_client_check_on_one_line(
    monkeypatch: pytest.MonkeyPatch, part: type, replacement: tuple[str, object]
) -> None:
    monkeypatch.setattr(part, *replacement)
    with pytest.raises(IncompatibleAiortcError) as raised:
        client_hooks.check_hooks()
    assert "\n" not in str(raised.value)


def run_broken(patch: str, program: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER.format(patch=patch), *program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        # A program that passed its check would serve or connect: bounded.
        timeout=60,
    )


def server_argv() -> list[str]:
    return ["server/server.py", "--signaling-port", str(free_port()), "--http-port", "0"]


def client_argv() -> list[str]:
    # Nothing listens there: the check must stop the client before it tries.
    return ["client/client.py", "--signaling-port", str(free_port()), "--connect-timeout", "1"]


@pytest.mark.parametrize(
    "patch, argv",
    [
        (BREAK_VERSION, server_argv),
        (BREAK_SENDER, server_argv),
        (BREAK_VERSION, client_argv),
        (BREAK_RECEIVER, client_argv),
    ],
    ids=["server-version", "server-sender", "client-version", "client-receiver"],
)
@pytest.mark.e2e
def test_a_mismatched_aiortc_stops_the_program_with_one_line(patch: str, argv: object) -> None:
    assert callable(argv)
    result = run_broken(patch, argv())
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "aiortc" in lines[0]
    assert "Traceback" not in result.stderr
