"""The stage trace's record format, its per-frame recorder, clocks and the join."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from protocol.instance_hook import InstanceHook
from protocol.stage_trace import (
    STAGE_NAMES,
    STAGES,
    ClockDomain,
    ClockMismatch,
    FrameStages,
    StageRecorder,
    StageTrace,
    StageTraceWriter,
    TraceFormatError,
    is_local_address,
    merge_traces,
    peer_host,
    stages_of,
)

HERE = ClockDomain("boot-1", "0 0", "vm")


def test_stages_run_server_client_server_and_are_named_once() -> None:
    sides = [s.side for s in STAGES]
    assert sides[0] == "server" and sides[-1] == "server"
    # server ... server, client ... client, server: one trip there and back.
    changes = sum(1 for a, b in zip(sides, sides[1:]) if a != b)
    assert changes == 2
    assert len(set(STAGE_NAMES)) == len(STAGE_NAMES)
    assert stages_of("server")[0] == "produced" and stages_of("server")[-1] == "answer_received"
    assert stages_of("client")[0] == "first_packet_received"


def test_a_stage_keeps_its_first_time_and_a_last_stage_its_last() -> None:
    frame = FrameStages(1, "s")
    for at in (2.0, 1.0, 3.0):
        frame.mark("first_packet_received", at)
        frame.mark("last_packet_received", at)
    assert frame.times == {"first_packet_received": 1.0, "last_packet_received": 3.0}
    with pytest.raises(ValueError, match="unknown stage"):
        frame.mark("teleported", 1.0)


def test_the_recorder_hands_on_a_frame_when_finished_or_when_too_many_are_open() -> None:
    emitted: list[FrameStages] = []
    recorder = StageRecorder("s", emitted.append, capacity=2)
    recorder.mark(10, "produced", 1.0)
    recorder.finish(10, "answer_received", 2.0)
    assert [(f.rtp, f.times) for f in emitted] == [(10, {"produced": 1.0, "answer_received": 2.0})]
    for rtp in (20, 30, 40):  # 20 never finishes: pushed out by 40
        recorder.mark(rtp, "produced", float(rtp))
    assert [f.rtp for f in emitted] == [10, 20] and recorder.open_frames == 2
    recorder.close()
    assert [f.rtp for f in emitted] == [10, 20, 30, 40] and recorder.open_frames == 0


def write_trace(path: Path, side: str, frames: dict[int, dict[str, float]], domain=HERE) -> None:
    with StageTraceWriter(path, side, domain=domain) as writer:  # type: ignore[arg-type]
        for rtp, times in frames.items():
            frame = FrameStages(rtp, "s")
            for stage, at in times.items():
                frame.mark(stage, at)
            writer.write(frame)
        assert writer.frames_written == len(frames)


def test_a_written_trace_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "server.jsonl"
    write_trace(path, "server", {7: {"produced": 1.5, "answer_received": 1.504}})
    header = json.loads(path.read_text().splitlines()[0])
    assert header["trace"] == "stage-trace" and header["side"] == "server"
    trace = StageTrace.read(path)
    assert trace.side == "server" and trace.domain == HERE
    assert trace.frames[7].times == {"produced": 1.5, "answer_received": 1.504}


def test_two_records_of_one_frame_are_merged_and_a_torn_last_line_is_skipped() -> None:
    header = json.dumps(
        {"trace": "stage-trace", "version": 1, "side": "client", "clock": HERE.as_dict()}
    )
    lines = [
        header,
        '{"rtp": 5, "session": "c", "t": {"first_packet_received": 2.0, "last_packet_received": 2.0}}',
        # A retransmission arrived after the frame was handed on.
        '{"rtp": 5, "session": "c", "t": {"first_packet_received": 2.5, "last_packet_received": 2.5}}',
        '{"rtp": 6, "session": "c", "t": {"deco',
    ]
    trace = StageTrace.parse(lines)
    assert trace.frames[5].times == {"first_packet_received": 2.0, "last_packet_received": 2.5}
    assert list(trace.frames) == [5]


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ['{"rtp": 1}'],
        ['{"trace": "stage-trace", "version": 2, "side": "server", "clock": {}}'],
        ['{"trace": "stage-trace", "version": 1, "side": "both", "clock": {}}'],
        [
            '{"trace": "stage-trace", "version": 1, "side": "server", "clock": {"hostname": "h"}}',
            '{"rtp": "x", "session": "s", "t": {}}',
        ],
    ],
)
def test_what_is_not_a_trace_is_refused(lines: list[str]) -> None:
    with pytest.raises(TraceFormatError):
        StageTrace.parse(lines)


def test_traces_on_one_clock_join_by_rtp_timestamp(tmp_path: Path) -> None:
    write_trace(tmp_path / "s", "server", {1: {"produced": 1.0}, 2: {"produced": 2.0}})
    write_trace(tmp_path / "c", "client", {2: {"decoded": 2.1}, 3: {"decoded": 3.1}})
    merged = merge_traces(StageTrace.read(tmp_path / "s"), StageTrace.read(tmp_path / "c"))
    assert merged == {2: {"produced": 2.0, "decoded": 2.1}}
    with pytest.raises(ValueError, match="a server trace and a client trace"):
        merge_traces(StageTrace.read(tmp_path / "c"), StageTrace.read(tmp_path / "s"))


@pytest.mark.parametrize(
    "other",
    [
        ClockDomain("boot-2", "0 0", "vm"),  # another host, or a reboot
        ClockDomain("boot-1", "86400 0", "vm"),  # a time namespace shifts CLOCK_MONOTONIC
        ClockDomain(None, "0 0", "vm"),  # no boot id: cannot tell
    ],
)
def test_traces_on_different_clocks_are_not_joined(tmp_path: Path, other: ClockDomain) -> None:
    write_trace(tmp_path / "s", "server", {1: {"produced": 1.0}})
    write_trace(tmp_path / "c", "client", {1: {"decoded": 1.1}}, domain=other)
    with pytest.raises(ClockMismatch, match="only the round trip"):
        merge_traces(StageTrace.read(tmp_path / "s"), StageTrace.read(tmp_path / "c"))


def test_a_container_on_the_same_host_shares_the_clock() -> None:
    assert HERE.same_clock(ClockDomain("boot-1", "0 0", "container-a1b2"))


def test_the_clock_domain_is_read_from_proc(tmp_path: Path) -> None:
    (tmp_path / "sys/kernel/random").mkdir(parents=True)
    (tmp_path / "sys/kernel/random/boot_id").write_text("abc\n")
    (tmp_path / "self").mkdir()
    (tmp_path / "self/timens_offsets").write_text("monotonic 100 0\nboottime 0 0\n")
    domain = ClockDomain.current(tmp_path)
    assert (domain.boot_id, domain.monotonic_offset) == ("abc", "100 0")
    assert ClockDomain.current(tmp_path / "missing").boot_id is None
    assert ClockDomain.current().boot_id  # this Linux host has one


def test_local_addresses_are_told_from_remote_ones() -> None:
    assert is_local_address("127.0.0.1")
    assert is_local_address("localhost")
    # TEST-NET-1 (RFC 5737) is never assigned to a host.
    assert not is_local_address("192.0.2.1")
    assert not is_local_address("no-such-host.invalid")


@pytest.mark.parametrize(
    "peer, host",
    [
        ("127.0.0.1:5000", "127.0.0.1"),
        ("[::1]:5000", "::1"),
        ("::1", "::1"),
        ("10.0.0.7 (WHEP)", "10.0.0.7"),
        ("server", "server"),
    ],
)
def test_the_host_part_of_a_peer(peer: str, host: str) -> None:
    assert peer_host(peer) == host


class Greeter:
    def hello(self, name: str) -> str:
        return f"hello {name}"


def test_an_instance_hook_changes_one_object_and_comes_out() -> None:
    hooked, other = Greeter(), Greeter()
    hook = InstanceHook(hooked, "hello", lambda original: lambda name: original(name).upper())
    assert hooked.hello("a") == "HELLO A" and other.hello("a") == "hello a"
    hook.remove()
    hook.remove()
    assert hooked.hello("a") == "hello a" and not hook.installed
    assert "hello" not in vars(hooked)


def test_instance_hooks_stack_and_come_out_in_reverse_order() -> None:
    greeter = Greeter()
    upper = InstanceHook(greeter, "hello", lambda original: lambda n: original(n).upper())
    shout = InstanceHook(greeter, "hello", lambda original: lambda n: original(n) + "!")
    assert greeter.hello("a") == "HELLO A!"
    with pytest.raises(RuntimeError, match="first"):
        upper.remove()
    shout.remove()
    assert greeter.hello("a") == "HELLO A"
    upper.remove()
    assert greeter.hello("a") == "hello a"
    with pytest.raises(TypeError, match="not callable"):
        InstanceHook(SimpleNamespace(hello=1), "hello", lambda original: original)
