import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.coordinates import (
    COORDINATE_LIMIT,
    MAX_MESSAGE_BYTES,
    CoordinateReport,
    InvalidReport,
    LatencyFeedback,
    _is_finite_number,
    decode_feedback,
    decode_report,
    encode_feedback,
    encode_report,
)

finite = st.floats(-COORDINATE_LIMIT, COORDINATE_LIMIT)


@given(st.integers(0, 2**63 - 1), finite, finite)
def test_round_trip_found(pts: int, x: float, y: float) -> None:
    report = CoordinateReport(pts, x, y)
    assert decode_report(encode_report(report)) == report


def test_round_trip_not_found() -> None:
    report = CoordinateReport(3000, None, None)
    text = encode_report(report)
    assert json.loads(text) == {"pts": 3000, "x": None, "y": None}
    assert decode_report(text) == report and not report.found


def test_integers_are_accepted_as_coordinates_and_bytes_as_input() -> None:
    assert decode_report(b'{"pts": 0, "x": 1, "y": 2}') == CoordinateReport(0, 1.0, 2.0)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{",
        "[]",
        "null",
        '{"pts": 0, "x": 1}',
        '{"pts": 0, "x": 1, "y": 2, "z": 3}',
        '{"pts": -1, "x": 1, "y": 2}',
        '{"pts": 1.5, "x": 1, "y": 2}',
        '{"pts": true, "x": 1, "y": 2}',
        '{"pts": "3000", "x": 1, "y": 2}',
        '{"pts": 0, "x": NaN, "y": 2}',
        '{"pts": 0, "x": Infinity, "y": 2}',
        '{"pts": 0, "x": 1, "y": null}',
        '{"pts": 0, "x": "1", "y": 2}',
        '{"pts": 0, "x": 1e999, "y": 2}',
        '{"pts": 0, "x": 1e7, "y": 2}',
        '{"pts": 0, "x": ' + "9" * 200 + ', "y": 2}',
        '{"pts": 99999999999999999999, "x": 1, "y": 2}',
        b"\xff\xfe",
        "[" * 200,
        " " * (MAX_MESSAGE_BYTES + 1),
    ],
)
def test_invalid_messages_raise(raw: "str | bytes") -> None:
    with pytest.raises(InvalidReport):
        decode_report(raw)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_fuzz_never_raises_anything_but_invalid_report(raw: "str | bytes") -> None:
    try:
        decode_report(raw)
    except InvalidReport:
        pass


@given(st.integers(0, 2**32 - 1), st.one_of(st.none(), st.integers(0, 2**63 - 1)), finite, finite)
def test_round_trip_with_rtp_timestamp(
    rtp_timestamp: int, pts: "int | None", x: float, y: float
) -> None:
    report = CoordinateReport(pts, x, y, rtp_timestamp=rtp_timestamp)
    assert decode_report(encode_report(report)) == report


def test_the_python_clients_message_carries_both_frame_ids() -> None:
    text = encode_report(CoordinateReport(3000, 1.5, 2.0, rtp_timestamp=90_003_000))
    assert json.loads(text) == {"rtp_timestamp": 90_003_000, "pts": 3000, "x": 1.5, "y": 2.0}
    assert len(text) < MAX_MESSAGE_BYTES


def test_a_browsers_message_has_the_rtp_timestamp_only() -> None:
    report = decode_report('{"rtp_timestamp": 4294967295, "x": null, "y": null}')
    assert report == CoordinateReport(None, None, None, rtp_timestamp=2**32 - 1)


def test_a_report_must_name_its_frame() -> None:
    with pytest.raises(ValueError):
        CoordinateReport(None, 1.0, 2.0)


@pytest.mark.parametrize(
    "raw",
    [
        '{"x": 1, "y": 2}',
        '{"rtp_timestamp": null, "x": 1, "y": 2}',
        '{"rtp_timestamp": 5, "pts": null, "x": 1, "y": 2}',
        '{"rtp_timestamp": -1, "x": 1, "y": 2}',
        '{"rtp_timestamp": 4294967296, "x": 1, "y": 2}',
        '{"rtp_timestamp": 1.0, "x": 1, "y": 2}',
        '{"rtp_timestamp": false, "x": 1, "y": 2}',
        '{"rtp_timestamp": 5, "x": 1, "y": 2, "pts_": 3}',
    ],
)
def test_invalid_rtp_timestamp_messages_raise(raw: str) -> None:
    with pytest.raises(InvalidReport):
        decode_report(raw)


def test_encoding_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode_report(CoordinateReport(0, float("nan"), 1.0))


def test_a_message_of_exactly_the_limit_is_read() -> None:
    text = '{"pts": 0, "x": 1, "y": 2}'
    padded = text + " " * (MAX_MESSAGE_BYTES - len(text))
    assert len(padded) == MAX_MESSAGE_BYTES
    assert decode_report(padded) == CoordinateReport(0, 1.0, 2.0)


def test_pts_and_rtp_timestamp_limits_are_exclusive() -> None:
    assert decode_report('{"pts": 9223372036854775807, "x": null, "y": null}').pts == 2**63 - 1
    with pytest.raises(InvalidReport):
        decode_report('{"pts": 9223372036854775808, "x": null, "y": null}')


@pytest.mark.parametrize(
    "raw,reason",
    [
        (" " * (MAX_MESSAGE_BYTES + 1), "message longer than 256 bytes"),
        ("{", "not JSON: Expecting"),
        ('{"pts": 0, "x": NaN, "y": 2}', "not JSON: NaN is not allowed"),
        ("[]", "expected an object with x, y and rtp_timestamp, pts or both"),
        ('{"pts": -1, "x": 1, "y": 2}', "pts must be a non-negative integer, got -1"),
        ('{"rtp_timestamp": 1.5, "x": 1, "y": 2}', "rtp_timestamp must be a uint32, got 1.5"),
        ('{"pts": 0, "x": 1, "y": null}', "x and y must both be finite coordinates or both null"),
    ],
)
def test_each_rejection_says_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidReport) as caught:
        decode_report(raw)
    assert str(caught.value).startswith(reason)  # json's own words may follow


def test_a_report_without_a_frame_says_why() -> None:
    with pytest.raises(
        ValueError, match="^a report names its frame by pts, rtp_timestamp or both$"
    ):
        CoordinateReport(None, None, None)


def test_an_int_beyond_float_range_is_not_a_coordinate() -> None:
    # Too long for a message, but the check must not trust the length limit.
    assert not _is_finite_number(10**400)
    assert not _is_finite_number(-(10**400))


def test_latency_feedback_round_trips_and_is_small() -> None:
    feedback = LatencyFeedback(p50_ms=41.25, p95_ms=60.5, answers=29)
    text = encode_feedback(feedback)
    assert json.loads(text) == {"type": "latency", "p50_ms": 41.25, "p95_ms": 60.5, "answers": 29}
    assert decode_feedback(text) == feedback
    assert decode_feedback(text.encode()) == feedback
    assert len(text) < MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[]",
        '{"pts": 0, "x": 1, "y": 2}',  # a report, not feedback
        '{"type": "weather", "p50_ms": 1, "p95_ms": 2, "answers": 3}',  # a future message
        '{"type": "latency", "p50_ms": "1", "p95_ms": 2, "answers": 3}',
        '{"type": "latency", "p50_ms": -1, "p95_ms": 2, "answers": 3}',
        '{"type": "latency", "p50_ms": NaN, "p95_ms": 2, "answers": 3}',
        '{"type": "latency", "p50_ms": 1, "p95_ms": 2, "answers": true}',
        '{"type": "latency", "p50_ms": 1, "p95_ms": 2}',
        '{"type": "latency", "p50_ms": 1, "p95_ms": 2, "answers": 3, "pad": "'
        + "x" * MAX_MESSAGE_BYTES
        + '"}',
        b"\xff\xfe",
    ],
)
def test_anything_but_latency_feedback_is_ignored_not_raised(raw: str | bytes) -> None:
    assert decode_feedback(raw) is None


def test_a_latency_message_is_no_valid_report() -> None:
    # Sent the wrong way, it is counted invalid by the server, never scored.
    with pytest.raises(InvalidReport):
        decode_report(encode_feedback(LatencyFeedback(1.0, 2.0, 3)))
