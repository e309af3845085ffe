"""User mistakes get one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Iterator

import pytest

from lab.programs import PYTHON, Program, free_port, start_server

pytestmark = pytest.mark.e2e


@contextmanager
def listening_socket() -> Iterator[tuple[socket.socket, int]]:
    """A TCP socket listening on an ephemeral loopback port, and that port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener, listener.getsockname()[1]


def run(argv: list[str], timeout: float = 60, env: dict[str, str] | None = None) -> Program:
    program = Program(argv, env=env)
    program.wait(timeout)
    return program


@pytest.mark.parametrize(
    "argv",
    [
        ["server/server.py", "--signaling-port", "abc"],
        ["server/server.py", "--fps", "0"],
        ["server/server.py", "--codec", "av1"],
        ["server/server.py", "--width", "641"],
        ["server/server.py", "--radius", "400"],
        ["server/server.py", "--no-such-flag"],
        ["client/client.py", "--signaling-port", "99999"],
        ["client/client.py", "--jitter-buffer", "slow"],
        ["client/client.py", "--detector", "centroids"],
        ["client/client.py", "--detect-in", "gpu"],
        ["client/client.py", "--detector", "inline", "--detect-in", "process"],
    ],
)
def test_bad_flags(argv: list[str]) -> None:
    program = run([PYTHON, *argv], timeout=30)
    assert program.process.returncode == 2
    assert "error:" in program.stderr and "Traceback" not in program.stderr


def test_bad_environment_variable() -> None:
    program = run(
        [PYTHON, "server/server.py"], env={"BALLTRACKER_SIGNALING_PORT": "many"}, timeout=30
    )
    assert program.process.returncode == 2
    assert "BALLTRACKER_SIGNALING_PORT" in program.stderr and "Traceback" not in program.stderr


def test_unreachable_server() -> None:
    program = run(
        [PYTHON, "client/client.py", "--signaling-port", str(free_port()), "--connect-timeout", "1"]
    )
    assert program.process.returncode == 1
    assert "error: cannot reach signaling" in program.stderr
    assert "Traceback" not in program.stderr


def test_unknown_host() -> None:
    program = run(
        [
            PYTHON,
            "client/client.py",
            "--signaling-host",
            "no-such-host.invalid",
            "--connect-timeout",
            "1",
        ]
    )
    assert program.process.returncode == 1
    assert "unknown host" in program.stderr and "Traceback" not in program.stderr


def test_port_in_use() -> None:
    with listening_socket() as (_, port):
        program = run(
            [PYTHON, "server/server.py", "--signaling-port", str(port), "--http-port", "0"]
        )
    assert program.process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in program.stderr
    assert "Traceback" not in program.stderr


def test_server_stops_on_sigterm_when_idle() -> None:
    server = start_server(free_port())
    try:
        server.stop()
        assert server.process.returncode == 0
    finally:
        server.close()


@pytest.mark.parametrize(
    "offer",
    [
        b'{"sdp": "v=0\\r\\nm=video x\\r\\n", "type": "offer"}\n',  # aiortc asserts on it
        b'{"sdp": "v=0\\r\\n", "type": "answer"}\n',  # the wrong kind
        b"not json at all\n",
    ],
)
def test_client_rejects_a_bad_offer_cleanly(offer: bytes) -> None:
    with listening_socket() as (listener, port):
        client = Program(
            [PYTHON, "client/client.py", "--signaling-port", str(port), "--connect-timeout", "5"]
        )
        try:
            listener.settimeout(30)
            connection, _ = listener.accept()
            with connection:
                connection.sendall(offer)
                assert client.wait(timeout=30) == 1, client.describe()
            assert "error:" in client.stderr and "Traceback" not in client.stderr
        finally:
            client.close()
