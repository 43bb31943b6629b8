"""Percentiles, the way the tables report them (milliseconds, linear interpolation)."""

from __future__ import annotations

import math
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def summary(seconds: list[float], misses: int = 0) -> dict[str, Any]:
    values = sorted(seconds)
    ms = lambda q: round(percentile(values, q) * 1000, 3)  # noqa: E731
    return {
        "n": len(values), "misses": misses,
        "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99),
        "max_ms": round(values[-1] * 1000, 3) if values else math.nan,
        "min_ms": round(values[0] * 1000, 3) if values else math.nan,
    }


def median(values: list[float]) -> float:
    return percentile(sorted(values), 0.5)
