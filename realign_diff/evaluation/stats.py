"""Paired statistics over prompts: a percentile bootstrap interval of the mean and an exact two-sided sign test."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def bootstrap_interval(values: Sequence[float], resamples: int = 10_000, seed: int = 0, level: float = 0.95):
    """(mean, low, high): the mean and the percentile bootstrap ``level`` interval of the mean (prompts resampled
    with replacement; seeded, so a report is reproducible)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    rng, means = np.random.default_rng(seed), []
    chunk = max(1, 4_000_000 // data.size)  # resamples at a time: memory stays bounded for large prompt sets
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        means.append(data[rng.integers(0, data.size, size=(rows, data.size))].mean(axis=1))
    means = np.concatenate(means)
    tail = (1.0 - level) / 2.0
    return float(data.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def sign_test(differences: Sequence[float]) -> tuple[int, int, int, float]:
    """(wins, losses, ties, p): the exact two-sided sign test of paired differences (ties left out)."""
    wins = sum(1 for d in differences if d > 0)
    losses = sum(1 for d in differences if d < 0)
    ties = len(differences) - wins - losses
    n = wins + losses
    if n == 0:
        return wins, losses, ties, 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2.0**n
    return wins, losses, ties, min(1.0, 2.0 * tail)
