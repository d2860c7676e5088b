"""Statistics derived from raw samples, which are always kept alongside them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

NOISY_CV = 0.10  # a result whose coefficient of variation exceeds this is flagged ``noisy``


def median_ci(samples: ArrayLike, confidence: float = 0.95, seed: int = 0) -> tuple[float | None, float | None]:
    """Bootstrap confidence interval of the median (scipy.stats.bootstrap, percentile method)."""
    x = np.asarray(samples, dtype=float)
    if x.size < 3 or np.all(x == x[0]):
        return (float(x[0]), float(x[0])) if x.size and np.all(x == x[0]) else (None, None)
    from scipy.stats import bootstrap

    res = bootstrap(
        (x,),
        np.median,
        confidence_level=confidence,
        n_resamples=999,
        method="percentile",
        random_state=np.random.default_rng(seed),
        vectorized=True,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(samples: Sequence[float], with_samples: bool = True) -> dict[str, object]:
    """n, mean, median, p90, p95, p99, std, iqr, cv, 95% CI of the median, noisy flag (all in ms)."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("cannot summarise an empty sample")
    q1, med, q3, p90, p95, p99 = np.percentile(x, [25, 50, 75, 90, 95, 99])
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    cv = std / mean if mean > 0 else (0.0 if std == 0 else math.inf)
    lo, hi = median_ci(x)
    out: dict[str, object] = {
        "n": int(x.size),
        "mean_ms": mean,
        "median_ms": float(med),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "std_ms": std,
        "iqr_ms": float(q3 - q1),
        "min_ms": float(x.min()),
        "max_ms": float(x.max()),
        "cv": float(cv),
        "ci95_ms": [lo, hi],
        "noisy": bool(cv > NOISY_CV),
    }
    if with_samples:
        out["samples_ms"] = [float(v) for v in x]
    return out
