"""Inspection metrics of defect vs good: escape and false-reject rates, ROC / PR curves, the operating threshold.

Terms (the ones inspection tools use):

* a part is **defective** when its true class is not the good (defect-free) class, ``data.good_class``;
* its **defect score** is ``1 - P(good)``, a probability in [0, 1];
* a decision **flags** a part (rejects it as defective): at the argmax decision, when the most probable
  class is not the good class; at a threshold ``t``, when its defect score is ``>= t``;
* **escape rate** = escapes / defective parts, an escape being a defective part that is not flagged
  (called good): the costly error on a line;
* **false-reject rate** = false rejects / good parts, a false reject being a good part that is flagged.

The operating threshold is chosen on the validation predictions of the model fitted on the training
split alone (`mfexp.job.Trained.val_prob`, taken before any refit: the refit model has seen validation)
as the highest threshold whose validation escape rate is at most ``inspection.target_escape_rate``,
which gives the fewest false rejects among those thresholds; it is then applied unchanged to the
delivered model on test. Curves and areas: scikit-learn (``roc_curve``, ``roc_auc_score``,
``precision_recall_curve``, ``average_precision_score``) with the defective parts as the positive class.
A rate over no part (no defective or no good part) is undefined: the functions return NaN and
`inspection_metrics` leaves it out, as MLflow should not record a made-up number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from mfexp import keys


@dataclass(frozen=True)
class Rates:
    """The two errors of a defect/good decision, as counts and rates (fractions in [0, 1], NaN over no part)."""

    escapes: int  # defective parts not flagged (called good)
    defective: int
    false_rejects: int  # good parts flagged
    good: int

    @property
    def escape_rate(self) -> float:
        return self.escapes / self.defective if self.defective else math.nan

    @property
    def false_reject_rate(self) -> float:
        return self.false_rejects / self.good if self.good else math.nan


@dataclass(frozen=True)
class Curves:
    """Defect-vs-good curves of one model on one split (scikit-learn); None where a split lacks one side."""

    false_reject_rate: np.ndarray  # ROC x: false-positive rate = false-reject rate, ascending
    detection_rate: np.ndarray  # ROC y: true-positive rate = 1 - escape rate
    recall: np.ndarray  # PR x: share of defective parts flagged, descending
    precision: np.ndarray  # PR y: share of flagged parts that are defective
    auroc: float
    average_precision: float


def good_index(classes: Sequence[str], good_class: str | None) -> int | None:
    """Index of the good class in ``classes``; None when no good class is known."""
    if good_class is None:
        return None
    classes = list(classes)
    if good_class not in classes:
        raise ValueError(f"good class {good_class!r} is not one of the classes {classes}")
    return classes.index(good_class)


def defect_scores(prob: np.ndarray, good: int) -> np.ndarray:
    """(N,) defect scores ``1 - P(good)`` from (N, K) class probabilities."""
    return 1.0 - np.asarray(prob, dtype=np.float64)[:, good]


def defective(y_true: np.ndarray, good: int) -> np.ndarray:
    """(N,) bool: the part's true class is not the good class."""
    return np.asarray(y_true) != good


def argmax_flags(prob: np.ndarray, good: int) -> np.ndarray:
    """(N,) bool: flagged by the argmax decision (most probable class is not the good class).

    Ties go to the lower class index, as ``numpy.argmax`` and the logged ``y_pred`` do."""
    return np.asarray(prob).argmax(axis=1) != good


def threshold_flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) bool: flagged at ``threshold`` (defect score ``>= threshold``; a tie is flagged)."""
    return np.asarray(scores) >= threshold


def rates(is_defective: np.ndarray, flagged: np.ndarray) -> Rates:
    """Escapes and false rejects of the decision ``flagged`` against the truth ``is_defective`` (both (N,) bool)."""
    d, f = np.asarray(is_defective, dtype=bool), np.asarray(flagged, dtype=bool)
    return Rates(escapes=int((d & ~f).sum()), defective=int(d.sum()), false_rejects=int((~d & f).sum()),
                 good=int((~d).sum()))


def choose_threshold(scores: np.ndarray, is_defective: np.ndarray, target_escape_rate: float) -> float:
    """The highest threshold whose escape rate on these parts is at most ``target_escape_rate``.

    With ``n`` defective parts, ``m = floor(target * n)`` escapes are allowed; the threshold is the
    (m+1)-th lowest defect score of the defective parts: below it lie at most ``m`` of them (fewer when
    scores tie there, as a tie is flagged), and any higher threshold lets ``m + 1`` pass. Good parts
    play no part in the choice, so the false rejects are the fewest the target allows. ``scores`` are
    (N,) defect scores (validation), ``is_defective`` (N,) bool; ``target_escape_rate`` in [0, 1).
    Raises ValueError when there is no defective part to choose from."""
    if not 0.0 <= target_escape_rate < 1.0:
        raise ValueError(f"target escape rate {target_escape_rate}: must be in [0, 1)")
    bad = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(is_defective, dtype=bool)])
    if len(bad) == 0:
        raise ValueError("no defective part to choose a threshold from")
    allowed = math.floor(target_escape_rate * len(bad) + 1e-9)  # 0.29 * 100 is 28.999...: 29 escapes allowed
    return float(bad[allowed])


def curves(is_defective: np.ndarray, scores: np.ndarray) -> Curves | None:
    """ROC and precision-recall curves of defect scores (scikit-learn); None unless both sides are present."""
    d = np.asarray(is_defective, dtype=bool)
    if d.all() or not d.any():
        return None
    fpr, tpr, _ = roc_curve(d, scores)
    precision, recall, _ = precision_recall_curve(d, scores)
    return Curves(fpr, tpr, recall, precision, float(roc_auc_score(d, scores)), float(average_precision_score(d, scores)))


def inspection_metrics(y_true: np.ndarray, prob: np.ndarray, good: int, threshold: float | None = None,
                       prefix: str = "test_") -> dict[str, float]:
    """MLflow metrics of one split: escape and false-reject rates at argmax (and at ``threshold``), AUROC, AP.

    Keys: ``<prefix>escape_rate``, ``<prefix>false_reject_rate`` (argmax), ``<prefix>defect_auroc``,
    ``<prefix>defect_average_precision`` and, with a threshold, ``<prefix>escape_rate_at_threshold``,
    ``<prefix>false_reject_rate_at_threshold``. Undefined values (a split without defective or without
    good parts) are left out."""
    d = defective(y_true, good)
    out = _rate_metrics(rates(d, argmax_flags(prob, good)), prefix, "")
    scores = defect_scores(prob, good)
    if threshold is not None:
        out |= _rate_metrics(rates(d, threshold_flags(scores, threshold)), prefix, keys.AT_THRESHOLD)
    c = curves(d, scores)
    if c is not None:
        out[f"{prefix}{keys.DEFECT_AUROC}"] = c.auroc
        out[f"{prefix}{keys.DEFECT_AVERAGE_PRECISION}"] = c.average_precision
    return out


def _rate_metrics(r: Rates, prefix: str, suffix: str) -> dict[str, float]:
    out = {f"{prefix}{keys.ESCAPE_RATE}{suffix}": r.escape_rate, f"{prefix}{keys.FALSE_REJECT_RATE}{suffix}": r.false_reject_rate}
    return {k: float(v) for k, v in out.items() if not math.isnan(v)}


def validation_threshold(val_labels: np.ndarray, val_prob: np.ndarray, good: int,
                         target_escape_rate: float) -> tuple[float | None, dict[str, float]]:
    """The operating threshold chosen on validation, and the metrics to log: ``defect_threshold`` and ``val_*``.

    ``val_prob`` (N, K) must come from the model fitted on the training split alone (before any refit).
    (None, {}) when the validation split holds no defective part."""
    d = defective(val_labels, good)
    if not d.any():
        return None, {}
    threshold = choose_threshold(defect_scores(val_prob, good), d, target_escape_rate)
    return threshold, {keys.DEFECT_THRESHOLD: threshold, **inspection_metrics(val_labels, val_prob, good, threshold, prefix="val_")}
