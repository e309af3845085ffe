"""A full server: not ready, still alive, and its clients wait for a slot.

Behind a Kubernetes Service, readiness decides which pod gets the next
client. A server whose every ``--max-sessions`` slot is taken answers 503 on
``/readyz`` (and its older name ``/healthz``) so the Service sends new clients elsewhere, 200 on ``/livez`` so
the kubelet does not restart it, and a client it refuses ("server busy")
tries again until a slot frees up or ``--connect-timeout`` runs out.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.programs import close_all, free_port, start_client, start_server, wait_for_reports

pytestmark = pytest.mark.e2e


def probes(http_port: int) -> tuple[int, int, int]:
    """The status of /readyz, its alias /healthz, and /livez."""
    return (
        status(http_port, "/readyz"),
        status(http_port, "/healthz"),
        status(http_port, "/livez"),
    )


def slots(http_port: int) -> tuple[float, float, float]:
    """``balltracker_session_slots`` total and free, and the busy refusals so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return (
        found[("balltracker_session_slots", ("total",))],
        found[("balltracker_session_slots", ("free",))],
        found[("balltracker_sessions_refused_total", ("busy",))],
    )


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
        assert probes(http_port) == (200, 200, 200)
        assert slots(http_port) == (1, 1, 0)
        first = start_client(port, "--duration", "6")
        server.wait_for_output("streaming to", timeout=30)
        assert probes(http_port) == (503, 503, 200)
        assert slots(http_port)[:2] == (1, 0)
        second = start_client(port, "--duration", "3", "--connect-timeout", "30")
        second.wait_for_output("server busy: 1 sessions active; trying again", timeout=20)
        assert slots(http_port)[2] >= 1
        assert first.wait(timeout=30) == 0, first.describe()
        assert second.wait(timeout=30) == 0, second.describe()
        assert probes(http_port) == (200, 200, 200)
        assert slots(http_port)[:2] == (1, 1)
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
