"""Benchmarks: numbers and ratios printed in one run, never asserted in tests."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"p50 {percentile(values, 50):7.0f} ms  p95 {percentile(values, 95):7.0f} ms  "
            f"mean {statistics.fmean(values):7.0f} ms  (n={len(values)})")
