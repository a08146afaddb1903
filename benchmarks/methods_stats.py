"""Mean and spread over seeds, and their one way of being printed in the methods benchmark's report."""

from __future__ import annotations

import statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float | None], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` of ``values`` times ``scale`` (just the mean for one value; ``-`` while one is missing)."""
    if not values or any(v is None for v in values):
        return "-"  # agreement of a run that finished before the teacher: filled in later
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
