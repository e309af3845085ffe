import random

import pytest

from server.statistics import LogHistogram


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
