"""Is the gain real? A paired bootstrap over the test examples.

Both models predicted the same test examples, so each bootstrap sample draws n example indices
with replacement and scores *both* models on that same sample; the spread of the differences
is the uncertainty of the gain that comes from the finite test set. Percentile intervals.

Per-class recall and precision follow scikit-learn's ``zero_division=0``: a resample without
any example of a class (recall) or without any prediction of it (precision) scores 0, as the
point estimates logged to MLflow do. The relative error reduction is undefined in a resample
where the baseline makes no error; such resamples are left out of its interval.

Not covered: the variation from training itself (seeds, data order). Train at several seeds
for that; the interval here only says how sure the test set is about these two models.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLES = 2000
LEVEL = 0.95
CHUNK = 250  # resamples per matrix product: bounds memory at CHUNK x n weights


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}


@dataclass(frozen=True)
class Bootstrap:
    """Percentile intervals of baseline-vs-best differences; positive = the best run is better.

    ``error_reduction`` = error(baseline) - error(best) (absolute, as a fraction);
    ``relative_reduction`` = that divided by error(baseline); recall / precision deltas = best - baseline.
    """

    samples: int
    level: float
    seed: int
    n: int
    error_baseline: Interval
    error_best: Interval
    error_reduction: Interval
    relative_reduction: Interval | None  # None when the baseline makes no error in any resample
    p_not_better: float  # share of resamples where the best run's error is not lower
    recall_delta: dict[str, Interval]
    precision_delta: dict[str, Interval]

    def as_dict(self) -> dict:
        return {
            "samples": self.samples, "level": self.level, "seed": self.seed, "n": self.n,
            "error_baseline": self.error_baseline.as_dict(), "error_best": self.error_best.as_dict(),
            "error_reduction": self.error_reduction.as_dict(),
            "relative_reduction": self.relative_reduction.as_dict() if self.relative_reduction else None,
            "p_not_better": self.p_not_better,
            "recall_delta": {c: i.as_dict() for c, i in self.recall_delta.items()},
            "precision_delta": {c: i.as_dict() for c, i in self.precision_delta.items()},
        }


def _rates(w: np.ndarray, hits: np.ndarray, totals: np.ndarray, empty: float = 0.0) -> np.ndarray:
    """(B, K) ratios sum(w * hits) / sum(w * totals), ``empty`` where the denominator is 0."""
    num, den = w @ hits, w @ totals
    return np.divide(num, den, out=np.full_like(num, empty), where=den > 0)


def resamples(n: int, samples: int, seed: int):
    """Paired bootstrap weights: (m, n) resample counts of the n items, ``samples`` rows in chunks of CHUNK.

    Every statistic drawn from the same ``seed`` sees the same resamples, so the report's intervals pair."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < samples:
        m = min(CHUNK, samples - done)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=m).astype(np.float64)
        done += m


def _interval(values: np.ndarray, level: float) -> Interval:
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.nanpercentile(values, [tail, 100.0 - tail], axis=0)
    return Interval(float(lo), float(hi))


def paired_bootstrap(y_true: np.ndarray, pred_baseline: np.ndarray, pred_best: np.ndarray, classes: list[str],
                     samples: int = SAMPLES, seed: int = 0, level: float = LEVEL) -> Bootstrap:
    y = np.asarray(y_true, dtype=np.int64)
    a = np.asarray(pred_baseline, dtype=np.int64)
    b = np.asarray(pred_best, dtype=np.int64)
    n, k = len(y), len(classes)
    if n == 0 or len(a) != n or len(b) != n:
        raise ValueError(f"paired bootstrap needs equally long, non-empty predictions (got {n}, {len(a)}, {len(b)})")
    eye = np.eye(k)
    truth, pa, pb = eye[y], eye[a], eye[b]  # (n, K) one-hot
    wrong = np.stack([a != y, b != y], axis=1).astype(np.float64)  # (n, 2)
    err, rec_a, rec_b, pre_a, pre_b = [], [], [], [], []
    for w in resamples(n, samples, seed):  # (m, n) resample counts
        err.append(w @ wrong / n)
        rec_a.append(_rates(w, truth * pa, truth))
        rec_b.append(_rates(w, truth * pb, truth))
        pre_a.append(_rates(w, truth * pa, pa))
        pre_b.append(_rates(w, truth * pb, pb))
    e = np.concatenate(err)
    e_a, e_b = e[:, 0], e[:, 1]
    reduction = e_a - e_b
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(e_a > 0, reduction / np.where(e_a > 0, e_a, 1.0), np.nan)
    d_rec = np.concatenate(rec_b) - np.concatenate(rec_a)
    d_pre = np.concatenate(pre_b) - np.concatenate(pre_a)
    return Bootstrap(
        samples=samples, level=level, seed=seed, n=n,
        error_baseline=_interval(e_a, level), error_best=_interval(e_b, level),
        error_reduction=_interval(reduction, level),
        relative_reduction=_interval(relative, level) if np.isfinite(relative).any() else None,
        p_not_better=float(np.mean(reduction <= 0)),
        recall_delta={c: _interval(d_rec[:, i], level) for i, c in enumerate(classes)},
        precision_delta={c: _interval(d_pre[:, i], level) for i, c in enumerate(classes)},
    )
