"""Summaries of error and latency whose memory does not grow with the run.

``LogHistogram`` keeps counts in logarithmic buckets, like HDR histograms or
DDSketch: any quantile is known within ``relative_accuracy`` of the true
sample, from a few thousand integers, however many samples went in. Count,
mean, minimum and maximum are exact.
"""

from __future__ import annotations

import math
from typing import Optional


class LogHistogram:
    def __init__(
        self,
        relative_accuracy: float = 0.005,
        minimum: float = 1e-4,
        maximum: float = 1e6,
    ) -> None:
        if not 0 < relative_accuracy < 1 or not 0 < minimum < maximum:
            raise ValueError("need 0 < relative_accuracy < 1 and 0 < minimum < maximum")
        self._gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self._gamma)
        self._minimum = minimum
        self._offset = math.floor(math.log(minimum) / self._log_gamma)
        buckets = math.ceil(math.log(maximum) / self._log_gamma) - self._offset + 1
        # Bucket 0 holds everything at or below ``minimum`` (such as an error
        # of exactly 0 px); the last one everything above ``maximum``.
        self._counts = [0] * (buckets + 1)
        self.count = 0
        self.total = 0.0
        self.min: Optional[float] = None
        self.max: Optional[float] = None

    def add(self, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"value must be finite and non-negative, got {value}")
        self._counts[self._bucket(value)] += 1
        self.count += 1
        self.total += value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    @property
    def mean(self) -> Optional[float]:
        return self.total / self.count if self.count else None

    def quantile(self, q: float) -> Optional[float]:
        """The q-quantile (0..1), within the relative accuracy; None when empty."""
        if not 0 <= q <= 1:
            raise ValueError("q must be within [0, 1]")
        if not self.count:
            return None
        rank = q * (self.count - 1)
        seen = 0
        for bucket, count in enumerate(self._counts):
            seen += count
            if seen > rank:
                return self._clamp(self._value(bucket))
        return self.max

    def _bucket(self, value: float) -> int:
        if value <= self._minimum:
            return 0
        bucket = math.ceil(math.log(value) / self._log_gamma) - self._offset
        return min(max(bucket, 1), len(self._counts) - 1)

    def _value(self, bucket: int) -> float:
        if bucket == 0:
            return self.min if self.min is not None else 0.0
        # The midpoint (in relative terms) of the bucket's range.
        upper = self._gamma ** (bucket + self._offset)
        return 2 * upper / (1 + self._gamma)

    def _clamp(self, value: float) -> float:
        assert self.min is not None and self.max is not None
        return min(max(value, self.min), self.max)

    def summary(self, quantiles: tuple[float, ...]) -> dict[str, Optional[float]]:
        """``{"mean", "max", "p50", ...}`` for a JSON report."""
        result: dict[str, Optional[float]] = {"mean": self.mean, "max": self.max}
        for q in quantiles:
            result[f"p{q * 100:g}"] = self.quantile(q)
        return result
