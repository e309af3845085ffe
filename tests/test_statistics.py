import random

import pytest

from server.core.statistics import LogHistogram


def test_empty_histogram() -> None:
    histogram = LogHistogram()
    assert histogram.count == 0
    assert histogram.mean is None and histogram.quantile(0.5) is None


def test_exact_mean_min_max() -> None:
    histogram = LogHistogram()
    for value in (0.0, 1.0, 2.0, 5.0):
        histogram.add(value)
    assert histogram.mean == 2.0
    assert histogram.min == 0.0 and histogram.max == 5.0


def test_quantiles_within_relative_accuracy() -> None:
    rng = random.Random(1)
    values = [rng.lognormvariate(3, 1) for _ in range(20000)]
    histogram = LogHistogram(relative_accuracy=0.005)
    for value in values:
        histogram.add(value)
    ordered = sorted(values)
    for q in (0.01, 0.5, 0.95, 0.99, 1.0):
        exact = ordered[round(q * (len(ordered) - 1))]
        assert histogram.quantile(q) == pytest.approx(exact, rel=0.011)


def test_small_values_and_zero() -> None:
    histogram = LogHistogram(minimum=1e-4)
    for value in (0.0, 0.0, 0.0, 0.01):
        histogram.add(value)
    assert histogram.quantile(0.5) == 0.0
    assert histogram.quantile(1.0) == pytest.approx(0.01, rel=0.01)


def test_memory_is_fixed() -> None:
    histogram = LogHistogram()
    buckets = len(histogram._counts)
    for value in range(100000):
        histogram.add(float(value))
    assert len(histogram._counts) == buckets < 10000


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_rejects_bad_values(bad: float) -> None:
    with pytest.raises(ValueError):
        LogHistogram().add(bad)


def test_summary_keys() -> None:
    histogram = LogHistogram()
    histogram.add(1.0)
    assert set(histogram.summary((0.5, 0.99))) == {"mean", "max", "p50", "p99"}


def filled(values: list[float], **options: float) -> LogHistogram:
    histogram = LogHistogram(**options)
    for value in values:
        histogram.add(value)
    return histogram


@pytest.mark.parametrize(
    "options",
    [
        {"relative_accuracy": 0.0},
        {"relative_accuracy": 1.0},
        {"relative_accuracy": 1.5},
        {"minimum": 0.0},
        {"minimum": 5.0, "maximum": 5.0},
    ],
)
def test_rejects_bad_parameters(options: dict[str, float]) -> None:
    message = "^need 0 < relative_accuracy < 1 and 0 < minimum < maximum$"
    with pytest.raises(ValueError, match=message):
        LogHistogram(**options)


def test_rejected_value_and_quantile_say_why() -> None:
    with pytest.raises(ValueError, match="^value must be finite and non-negative, got -1.0$"):
        LogHistogram().add(-1.0)
    histogram = filled([1.0])
    for q in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"^q must be within \[0, 1\]$"):
            histogram.quantile(q)


def test_small_quantiles_of_few_samples() -> None:
    histogram = filled([1.0, 2.0, 3.0])
    assert histogram.quantile(0.0) == 1.0
    assert histogram.quantile(0.5) == pytest.approx(2.0, rel=0.005)
    assert histogram.quantile(1.0) == pytest.approx(3.0, rel=0.005)


def test_default_range_holds_sub_unit_values_within_accuracy() -> None:
    # Errors well under a pixel are the common case: the default minimum is 1e-4.
    histogram = filled([0.001, 0.002, 0.003, 0.5, 0.9])
    assert histogram.quantile(0.25) == pytest.approx(0.002, rel=0.005)
    assert histogram.quantile(0.75) == pytest.approx(0.5, rel=0.005)


def test_minimum_is_the_last_value_of_the_zero_bucket() -> None:
    # Coarse buckets (10 %) make the bucket boundaries visible.
    coarse = {"relative_accuracy": 0.05, "minimum": 1.0, "maximum": 100.0}
    # At or below minimum: read back as the smallest value seen.
    assert filled([0.0, 1.0, 10.0], **coarse).quantile(0.5) == 0.0
    # Just above it: the first bucket, within the accuracy.
    assert filled([0.0, 1.01, 10.0], **coarse).quantile(0.5) == pytest.approx(1.01, rel=0.05)


@pytest.mark.parametrize("maximum", [50.0, 100.0])
def test_values_above_maximum_share_one_bucket_just_above_it(maximum: float) -> None:
    histogram = filled([1.0, maximum * 100, maximum * 1000], maximum=maximum)
    gamma = (1 + 0.005) / (1 - 0.005)
    assert maximum < histogram.quantile(0.5) < maximum * gamma**2  # type: ignore[operator]
    assert histogram.quantile(0.5) == histogram.quantile(0.75)


def test_summary_values_are_the_quantiles() -> None:
    histogram = filled([1.0, 2.0, 3.0, 4.0])
    summary = histogram.summary((0.5, 0.99))
    assert summary == {
        "mean": 2.5,
        "max": 4.0,
        "p50": histogram.quantile(0.5),
        "p99": histogram.quantile(0.99),
    }
    assert summary["p50"] is not None
