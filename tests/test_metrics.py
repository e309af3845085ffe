"""TrackingMetrics: counts, histograms and the exposition a scraper reads."""

from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.console.metrics import ERROR_BUCKETS_PX, LATENCY_BUCKETS_S, TrackingMetrics


def samples(metrics: TrackingMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition exactly as Prometheus would and index the samples."""
    body = generate_latest(metrics.registry)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for s in family.samples
    }


def value(metrics: TrackingMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def test_fresh_metrics_are_zero() -> None:
    m = TrackingMetrics()
    assert value(m, "balltracker_active_sessions") == 0
    for name in ("sessions", "frames_sent", "frames_answered"):
        assert value(m, f"balltracker_{name}_total") == 0
    for reason in ("malformed", "unknown_frame", "duplicate"):
        assert value(m, "balltracker_invalid_messages_total", reason=reason) == 0
    for reason in ("busy", "shutting_down"):
        assert value(m, "balltracker_sessions_refused_total", reason=reason) == 0
    assert value(m, "balltracker_tracking_error_pixels_count") == 0
    assert value(m, "balltracker_latency_seconds_count") == 0


def test_every_metric_is_prefixed_and_typed() -> None:
    body = generate_latest(TrackingMetrics().registry)
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    expected = {
        "balltracker_active_sessions": "gauge",
        "balltracker_sessions": "counter",
        "balltracker_frames_sent": "counter",
        "balltracker_frames_answered": "counter",
        "balltracker_invalid_messages": "counter",
        "balltracker_tracking_error_pixels": "histogram",
        "balltracker_latency_seconds": "histogram",
        "balltracker_sessions_refused": "counter",
        "balltracker_session_slots": "gauge",
        "balltracker_build_info": "gauge",
        "process_cpu_seconds": "counter",
        "process_resident_memory_bytes": "gauge",
        "python_info": "gauge",
    }
    for name, kind in expected.items():
        assert families.get(name) == kind, (name, families)
    standard = ("process_", "python_")
    assert all(name.startswith(("balltracker_", *standard)) for name in families)


def test_sessions_active_and_total() -> None:
    m = TrackingMetrics()
    m.session_started()
    m.session_started()
    m.session_started()
    m.session_ended()
    assert value(m, "balltracker_active_sessions") == 2
    assert value(m, "balltracker_sessions_total") == 3


def test_unmatched_session_end_does_not_go_negative() -> None:
    m = TrackingMetrics()
    m.session_ended()
    m.session_started()
    assert value(m, "balltracker_active_sessions") == 1


def test_frame_counters() -> None:
    m = TrackingMetrics()
    for _ in range(5):
        m.frame_sent()
    m.frame_answered(0.5, 20.0)
    m.frame_answered(3.0, 120.0)
    m.invalid_message("duplicate")
    m.invalid_message("duplicate")
    m.invalid_message("malformed")
    assert value(m, "balltracker_frames_sent_total") == 5
    assert value(m, "balltracker_frames_answered_total") == 2
    assert value(m, "balltracker_invalid_messages_total", reason="duplicate") == 2
    assert value(m, "balltracker_invalid_messages_total", reason="malformed") == 1
    assert value(m, "balltracker_invalid_messages_total", reason="unknown_frame") == 0


def test_histograms_bucket_and_sum() -> None:
    m = TrackingMetrics()
    m.frame_answered(0.004, 3.0)
    m.frame_answered(0.3, 40.0)
    m.frame_answered(42.0, 1500.0)
    err = "balltracker_tracking_error_pixels"
    assert value(m, f"{err}_bucket", le="0.005") == 1
    assert value(m, f"{err}_bucket", le="0.5") == 2
    assert value(m, f"{err}_bucket", le="50.0") == 3
    assert value(m, f"{err}_bucket", le="+Inf") == 3
    assert value(m, f"{err}_count") == 3
    assert value(m, f"{err}_sum") == pytest.approx(42.304)
    # Latency is given in ms and exposed in seconds, Prometheus' base unit.
    lat = "balltracker_latency_seconds"
    assert value(m, f"{lat}_bucket", le="0.005") == 1
    assert value(m, f"{lat}_bucket", le="0.05") == 2
    assert value(m, f"{lat}_bucket", le="1.0") == 2
    assert value(m, f"{lat}_bucket", le="2.0") == 3
    assert value(m, f"{lat}_sum") == pytest.approx(1.543)


def test_bucket_ranges_cover_the_brief() -> None:
    assert min(ERROR_BUCKETS_PX) <= 0.001 and max(ERROR_BUCKETS_PX) >= 50
    assert min(LATENCY_BUCKETS_S) <= 0.001 and max(LATENCY_BUCKETS_S) >= 2
    assert list(ERROR_BUCKETS_PX) == sorted(set(ERROR_BUCKETS_PX))
    assert list(LATENCY_BUCKETS_S) == sorted(set(LATENCY_BUCKETS_S))


def test_non_finite_values_do_not_poison_the_sums() -> None:
    m = TrackingMetrics()
    m.frame_answered(math.nan, math.inf)
    m.frame_answered(1.0, -0.2)  # clock granularity: recorded as 0 ms
    assert value(m, "balltracker_frames_answered_total") == 2
    assert value(m, "balltracker_tracking_error_pixels_count") == 1
    assert value(m, "balltracker_tracking_error_pixels_sum") == 1.0
    assert value(m, "balltracker_latency_seconds_count") == 1
    assert value(m, "balltracker_latency_seconds_sum") == 0.0


def test_instances_are_independent_and_global_registry_untouched() -> None:
    before = {name for name in REGISTRY._names_to_collectors if name.startswith("balltracker")}
    a, b = TrackingMetrics(), TrackingMetrics()  # would raise on a shared registry
    a.frame_sent()
    assert value(a, "balltracker_frames_sent_total") == 1
    assert value(b, "balltracker_frames_sent_total") == 0
    after = {name for name in REGISTRY._names_to_collectors if name.startswith("balltracker")}
    assert before == after == set()


def test_answer_without_a_ball_counts_but_records_only_latency() -> None:
    m = TrackingMetrics()
    m.frame_answered(None, 25.0)
    assert value(m, "balltracker_frames_answered_total") == 1
    assert value(m, "balltracker_tracking_error_pixels_count") == 0
    assert value(m, "balltracker_latency_seconds_count") == 1


def test_build_info_names_the_versions() -> None:
    import platform
    from importlib.metadata import version

    from protocol.version import VERSION

    labels = {
        "version": VERSION,
        "aiortc_version": version("aiortc"),
        "python_version": platform.python_version(),
    }
    assert value(TrackingMetrics(), "balltracker_build_info", **labels) == 1


def test_refusals_by_reason_and_slots() -> None:
    m = TrackingMetrics()
    free = [3]
    m.count_slots(4, lambda: free[0])
    m.session_refused("busy")
    m.session_refused("busy")
    m.session_refused("shutting_down")
    assert value(m, "balltracker_sessions_refused_total", reason="busy") == 2
    assert value(m, "balltracker_sessions_refused_total", reason="shutting_down") == 1
    assert value(m, "balltracker_session_slots", state="total") == 4
    assert value(m, "balltracker_session_slots", state="free") == 3
    free[0] = 0
    assert value(m, "balltracker_session_slots", state="free") == 0


def test_process_collectors_are_in_the_private_registry() -> None:
    assert value(TrackingMetrics(), "process_cpu_seconds_total") >= 0
