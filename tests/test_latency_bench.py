"""bench/latency.py's report: ratios against stock and against an earlier commit."""

from __future__ import annotations

from bench.latency import RunResult, markdown_table, p50_ratio, stage_tables, variant_label
from bench.stage_budget import stage_budget


def run(jitter: str, p50: float, programs: str = "") -> RunResult:
    result = RunResult("vga30-vp8", "640x480@30 VP8", jitter, 10.0, programs=programs)
    result.server_report = {
        "frames_sent": 300,
        "answered_ratio": 1.0,
        "error_px": {"mean": 0.006, "max": 0.05},
        "latency_ms": {"p50": p50, "p95": p50 + 1, "p99": p50 + 2},
    }
    return result


def test_ratios_are_against_this_trees_fast_run() -> None:
    results = [run("fast", 3.0), run("stock", 36.0), run("fast", 4.5, programs="abc123")]
    assert p50_ratio(results, "vga30-vp8") == 12.0
    assert p50_ratio(results, "vga30-vp8", "before") == 1.5
    assert p50_ratio(results[:1], "vga30-vp8", "before") is None
    assert [variant_label(r) for r in results] == ["fast", "stock", "fast @ abc123"]
    rows = markdown_table(results).splitlines()
    assert rows[3].endswith("| 12.00× |") and rows[4].endswith("| 1.50× |")
    assert "fast @ abc123" in rows[4]


def test_each_traced_run_gets_its_stage_table() -> None:
    traced, untraced = run("fast", 3.0), run("stock", 36.0)
    traced.stages = stage_budget(
        {1: {"produced": 1.0, "answer_received": 1.003}}, ("produced", "answer_received")
    )
    untraced.stages_error = "different clocks"
    text = stage_tables([traced, untraced])
    assert "640x480@30 VP8 fast, per stage:" in text
    assert "produced → **answer_received**" in text
    assert "640x480@30 VP8 stock: no per-stage table: different clocks" in text
