"""The per-stage latency budget the benchmark prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.stage_budget import budget_from_files, main, markdown, stage_budget
from protocol.stage_trace import ClockDomain, ClockMismatch, FrameStages, StageTraceWriter

STAGES = ("produced", "encode_end", "answer_received")


def frame(produced: float, encoded_ms: float, answered_ms: float) -> dict[str, float]:
    return {
        "produced": produced,
        "encode_end": produced + encoded_ms / 1000,
        "answer_received": produced + answered_ms / 1000,
    }


def test_shares_add_up_and_percentiles_are_per_segment() -> None:
    frames = {i: frame(float(i), 1.0, 4.0) for i in range(99)}
    frames[99] = frame(99.0, 11.0, 14.0)  # one slow encode
    budget = stage_budget(frames, STAGES)
    encode, rest = budget.segments
    assert (budget.frames_traced, budget.frames_complete, budget.frames_out_of_order) == (
        100,
        100,
        0,
    )
    assert encode.mean_ms == pytest.approx(1.1) and rest.mean_ms == pytest.approx(3.0)
    assert encode.share_pct + rest.share_pct == pytest.approx(100.0)
    assert encode.p50_ms == pytest.approx(1.0) and encode.p99_ms > 1.0
    assert budget.total is not None and budget.total.p50_ms == pytest.approx(4.0)


def test_only_frames_that_passed_every_stage_count_and_disorder_is_counted() -> None:
    frames = {
        1: frame(1.0, 1.0, 4.0),
        2: {"produced": 2.0, "answer_received": 2.004},  # never encoded: not counted
        3: frame(3.0, 5.0, 4.0),  # answered "before" its encode ended: counted, flagged
    }
    budget = stage_budget(frames, STAGES)
    assert (budget.frames_traced, budget.frames_complete, budget.frames_out_of_order) == (3, 2, 1)
    assert "1 of them had a stage out of order" in markdown(budget)


def test_nothing_complete_says_so() -> None:
    budget = stage_budget({1: {"produced": 1.0}}, STAGES)
    assert budget.total is None and "no frame passed every stage" in markdown(budget)


def test_the_table_names_each_stage_in_path_order() -> None:
    table = markdown(stage_budget({1: frame(1.0, 1.0, 4.0)}, STAGES))
    lines = table.splitlines()
    assert "produced → **encode_end**" in lines[2]
    assert "encode_end → **answer_received**" in lines[3]
    assert lines[4].startswith("| **end to end**")


def traces(tmp_path: Path, client_boot: str) -> tuple[Path, Path]:
    paths = tmp_path / "server.jsonl", tmp_path / "client.jsonl"
    for path, side, boot, times in (
        (paths[0], "server", "b1", {"produced": 1.0, "answer_received": 1.004}),
        (paths[1], "client", client_boot, {"decoded": 1.002}),
    ):
        with StageTraceWriter(path, side, domain=ClockDomain(boot, "0 0", "h")) as writer:  # type: ignore[arg-type]
            record = FrameStages(42, "s")
            for stage, at in times.items():
                record.mark(stage, at)
            writer.write(record)
    return paths


def test_from_files_on_one_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server, client = traces(tmp_path, "b1")
    assert budget_from_files(server, client).frames_traced == 1
    assert main([str(server), str(client)]) == 0
    # Traced by both sides, but not through every stage of the real path.
    assert "no frame passed every stage; 1 traced by both sides" in capsys.readouterr().out


def test_from_files_of_two_hosts_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, client = traces(tmp_path, "b2")
    with pytest.raises(ClockMismatch):
        budget_from_files(server, client)
    assert main([str(server), str(client)]) == 1
    assert "only the round trip" in capsys.readouterr().err
