"""A full server: not ready, still alive, and its clients wait for a slot.

Behind a Kubernetes Service, readiness decides which pod gets the next
client. A server whose every ``--max-sessions`` slot is taken answers 503 on
``/healthz`` so the Service sends new clients elsewhere, 200 on ``/livez`` so
the kubelet does not restart it, and a client it refuses ("server busy")
tries again until a slot frees up or ``--connect-timeout`` runs out.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lab.programs import close_all, free_port, start_client, start_server, wait_for_reports

pytestmark = pytest.mark.e2e


def status(http_port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.timeout(90)
def test_a_full_server_is_unready_but_alive_and_its_next_client_waits_for_the_slot(
    tmp_path: Path,
) -> None:
    port, http_port = free_port(), free_port()
    server = start_server(
        port, "--max-sessions", "1", "--report-dir", str(tmp_path), http_port=http_port
    )
    first = second = None
    try:
        server.wait_for_output("console on", timeout=30)
        assert (status(http_port, "/healthz"), status(http_port, "/livez")) == (200, 200)
        first = start_client(port, "--duration", "6")
        server.wait_for_output("streaming to", timeout=30)
        assert (status(http_port, "/healthz"), status(http_port, "/livez")) == (503, 200)
        second = start_client(port, "--duration", "3", "--connect-timeout", "30")
        second.wait_for_output("server busy: 1 sessions active; trying again", timeout=20)
        assert first.wait(timeout=30) == 0, first.describe()
        assert second.wait(timeout=30) == 0, second.describe()
        assert (status(http_port, "/healthz"), status(http_port, "/livez")) == (200, 200)
    finally:
        close_all(first, second, server)
    reports = wait_for_reports(tmp_path, 2)
    assert [r["end_reason"] for r in reports] == ["client said bye", "client said bye"]
    assert all(r["answered_ratio"] > 0.9 for r in reports), reports


@pytest.mark.timeout(60)
def test_a_client_refused_until_its_connect_timeout_exits_3(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(port, "--max-sessions", "1")
    first = refused = None
    try:
        first = start_client(port)
        server.wait_for_output("streaming to", timeout=30)
        refused = start_client(port, "--connect-timeout", "3")
        assert refused.wait(timeout=30) == 3, refused.describe()
        assert refused.stderr.count("trying again") >= 2, refused.describe()
        assert "error: the server refused the session: server busy" in refused.stderr
    finally:
        close_all(first, refused, server)
