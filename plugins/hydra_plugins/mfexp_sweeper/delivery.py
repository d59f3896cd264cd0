"""The delivery rule: which full-budget policy a sweep delivers, decided on paired validation outcomes; free of Hydra and MLflow.

Every policy trained at the full budget (the baseline without a policy, the candidates, the trivial
reference) is fitted on the training split and scored on the same validation images before any
refit (each run's ``val_predictions.csv``). The comparison with the baseline is therefore paired
image by image, which is far more sensitive than comparing two totals, and the uncertainty of a
difference can be measured by resampling the validation images (paired bootstrap, Efron &
Tibshirani 1993, ch. 16). A challenger is delivered only when the rule says it is better than the
baseline beyond that noise; otherwise the baseline is, and `Decision.reason` says why in one line.

Rules (``search.delivery_rule``), each comparing a challenger with the baseline:

* ``val_loss``: the lowest mean validation loss wins, however small the difference (mfexp's rule
  before 0.2; kept for comparison);
* ``val_error``: the fewest validation errors win, ties to the lower loss, then to the baseline;
* ``paired``: fewer validation errors than the baseline, and a validation-loss gain whose one-sided
  paired-bootstrap lower bound at ``level`` is above zero;
* ``paired_error``: an error reduction whose one-sided paired-bootstrap lower bound is above zero;
* ``mcnemar``: fewer validation errors by McNemar's exact test (one-sided, on the images exactly one
  of the two gets wrong; Dietterich, Neural Computation 1998, for comparing two classifiers on one
  test set): a significant error reduction, like ``paired_error`` without resampling.

With several challengers, ``level`` is Bonferroni-corrected (``1 - (1 - level) / k``) when
``correct`` is set, since the best of k looks better than it is. Among the challengers that pass,
the one with the fewest errors, then the lowest loss, is delivered.
"""
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# No `from __future__ import annotations`: Hydra's plugin scan executes this module without registering it in
# sys.modules, and dataclasses then cannot resolve string annotations. numpy is imported inside functions.

RULES = ("paired", "paired_error", "mcnemar", "val_error", "val_loss")


@dataclass(frozen=True)
class Outcomes:
    """One policy's per-image validation outcome: ``nll`` (N,) cross-entropy of the true class, ``wrong`` (N,) bool."""

    name: str
    nll: Any  # np.ndarray (N,) float
    wrong: Any  # np.ndarray (N,) bool

    @classmethod
    def of(cls, name: str, y_true, prob) -> "Outcomes":
        """From labels (N,) and class probabilities (N, K), as in ``val_predictions.csv``."""
        import numpy as np

        y, p = np.asarray(y_true, dtype=np.int64), np.asarray(prob, dtype=np.float64)
        return cls(name, -np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)), p.argmax(1) != y)

    @property
    def loss(self) -> float:
        return float(self.nll.mean())

    @property
    def errors(self) -> int:
        return int(self.wrong.sum())


@dataclass(frozen=True)
class Comparison:
    """A challenger against the baseline on the same validation images."""

    name: str
    loss: float
    errors: int
    loss_gain: float  # baseline loss - challenger loss (> 0: the challenger is better)
    loss_gain_low: float  # its one-sided lower bound at the (corrected) level
    error_gain: int  # baseline errors - challenger errors
    error_gain_low: float  # lower bound of the error-rate reduction (share of images)
    passed: bool
    why: str
    p_value: float = 1.0  # McNemar's exact one-sided p: the chance of this many fixes among the discordant images


@dataclass(frozen=True)
class Decision:
    delivered: str  # the baseline's name when no challenger passed
    rule: str
    level: float  # the one-sided level each comparison used (after correction)
    n: int  # validation images
    baseline_loss: float
    baseline_errors: int
    comparisons: tuple[Comparison, ...]
    reason: str


def _lower_bounds(base: Outcomes, other: Outcomes, alpha: float, samples: int, seed: int) -> tuple[float, float]:
    """One-sided lower bounds of the mean loss gain and the error-rate reduction (paired bootstrap over images)."""
    import numpy as np

    n = len(base.nll)
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    d_loss = (base.nll - other.nll)[idx].mean(1)
    d_err = (base.wrong.astype(float) - other.wrong.astype(float))[idx].mean(1)
    return float(np.quantile(d_loss, alpha)), float(np.quantile(d_err, alpha))


def _mcnemar(fixed: int, broken: int) -> float:
    """One-sided exact McNemar p-value: P(at least ``fixed`` of the ``fixed + broken`` discordant images go the
    challenger's way if each were a fair coin) (scipy.stats.binomtest)."""
    if fixed + broken == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(fixed, fixed + broken, 0.5, alternative="greater").pvalue)


def decide(baseline: Outcomes, challengers: Sequence[Outcomes], rule: str = "paired", level: float = 0.95,
           correct: bool = True, samples: int = 2000, seed: int = 0) -> Decision:
    """Which policy to deliver: a challenger only when ``rule`` finds it better than ``baseline``.

    All outcomes must be on the same validation images in the same order. Raises ValueError for an
    unknown rule or outcomes of different lengths."""
    if rule not in RULES:
        raise ValueError(f"search.delivery_rule={rule}: use one of {', '.join(RULES)}")
    n = len(baseline.nll)
    if any(len(c.nll) != n for c in challengers):
        raise ValueError("delivery: the policies were scored on different validation images")
    k = max(1, len(challengers))
    alpha = (1 - level) / k if correct else 1 - level
    comps = []
    for i, c in enumerate(challengers):
        loss_low, err_low = _lower_bounds(baseline, c, alpha, samples, seed + i)
        gain, fewer = baseline.loss - c.loss, baseline.errors - c.errors
        fixed, broken = int((baseline.wrong & ~c.wrong).sum()), int((~baseline.wrong & c.wrong).sum())
        p = _mcnemar(fixed, broken)
        errors = f"{c.errors} vs {baseline.errors} validation errors"
        ok, why = {
            "val_loss": (gain > 0, f"val loss {c.loss:.4f} vs {baseline.loss:.4f}"),
            "val_error": (fewer > 0 or (fewer == 0 and gain > 0), f"{errors}, val loss {c.loss:.4f} vs {baseline.loss:.4f}"),
            "paired": (fewer > 0 and loss_low > 0,
                       f"{errors}; val-loss gain {gain:+.4f}, lower bound {loss_low:+.4f} at {1 - alpha:.1%}"),
            "paired_error": (err_low > 0, f"{errors}; error-rate reduction lower bound {100 * err_low:+.1f} pp "
                                          f"at {1 - alpha:.1%}"),
            "mcnemar": (p < alpha, f"{errors}, {fixed} fixed and {broken} broken; McNemar p = {p:.3f} "
                                   f"(needs < {alpha:.4f})"),
        }[rule]
        comps.append(Comparison(c.name, c.loss, c.errors, gain, loss_low, fewer, err_low, ok, why, p))
    passed = [c for c in comps if c.passed]
    if rule == "val_loss":
        best = min(passed, key=lambda c: c.loss, default=None)
    else:
        best = min(passed, key=lambda c: (c.errors, c.loss), default=None)
    if best is None:
        close = min(comps, key=lambda c: (c.errors, c.loss), default=None)
        reason = (f"the baseline is delivered: no policy beat it on the {n} validation images by rule '{rule}'"
                  + (f" (closest: {close.name}, {close.why})" if close else " (no other policy was trained)"))
        delivered = baseline.name
    else:
        reason = f"{best.name} is delivered: it beat the baseline on the {n} validation images by rule '{rule}' ({best.why})"
        delivered = best.name
    return Decision(delivered, rule, 1 - alpha, n, baseline.loss, baseline.errors, tuple(comps), reason)
