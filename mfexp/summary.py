"""The verdict printed at the end of a run: test scores, worst classes first, and where to look in MLflow."""
from __future__ import annotations

import shlex
from typing import Sequence

import numpy as np
from sklearn.metrics import f1_score

from mfexp import inspection
from mfexp.metrics import classification_metrics
from mfexp.names import key_names

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def verdict(
    y_true: np.ndarray,
    prob: np.ndarray,
    classes: Sequence[str],
    *,
    best_epoch: int,
    epochs_run: int,
    refit_epochs: int = 0,
    good_class: str | None = None,
    threshold: float | None = None,
    target_escape_rate: float | None = None,
    run_name: str,
    run_id: str,
    experiment_id: str,
    tracking_uri: str,
) -> str:
    """The console summary of a tested run, as plain text lines (no trailing newline).

    ``y_true`` are the test labels, ``prob`` the (N, C) class probabilities, ``best_epoch`` is
    1-based (the epoch whose weights were tested, as logged in MLflow's ``best_epoch``). When the
    model does no better than always predicting the test split's majority class (accuracy or
    macro-F1 at most that constant guess's), the first line is a WARNING saying so. One line gives the
    inspection rates (`inspection_line`) with ``good_class``, or says how to name one.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    classes = list(classes)
    if len(y_true) == 0:
        raise ValueError("verdict needs at least one test example")
    if prob.shape != (len(y_true), len(classes)):
        raise ValueError(f"prob has shape {prob.shape}; expected ({len(y_true)}, {len(classes)})")

    m = classification_metrics(y_true, prob, classes, prefix="")
    labels = np.arange(len(classes))
    counts = np.bincount(y_true, minlength=len(classes))
    majority = int(counts.argmax())
    share = counts[majority] / len(y_true)
    const_f1 = float(f1_score(y_true, np.full_like(y_true, majority), labels=labels, average="macro", zero_division=0))
    maj = classes[majority]

    lines: list[str] = []
    if (counts > 0).sum() < 2:
        lines.append(f"NOTE: the test split holds only '{maj}': these scores say nothing about the other classes.")
    elif m["accuracy"] <= share + 1e-9 or m["macro_f1"] <= const_f1 + 1e-9:
        lines.append(f"WARNING: this model is no better than always predicting '{maj}' ({100 * share:.1f} % of the "
                     f"test split): it has not learned the other classes.")
    lines.append(f"== run '{run_name}' (id {run_id}) ==")
    lines.append(f"test error {100 * m['error_rate']:.1f} %   macro-F1 {m['macro_f1']:.3f}   "
                 f"(always '{maj}': error {100 * (1 - share):.1f} %, macro-F1 {const_f1:.3f})")
    if refit_epochs:
        lines.append(f"validation chose epoch {best_epoch} of {epochs_run}; the model tested was then retrained "
                     f"on train + validation for {refit_epochs} epochs")
    else:
        lines.append(f"best epoch {best_epoch} of {epochs_run} (the weights tested)")

    lines.append(inspection_line(y_true, prob, classes, good_class, threshold, target_escape_rate))

    rows, safe = [], key_names(classes)
    for c in classes:
        k = safe[c]
        p, r, s = m[f"precision/{k}"], m[f"recall/{k}"], int(m[f"support/{k}"])
        f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
        rows.append((r, f1, c, p, s))
    rows.sort(key=lambda row: (row[0], row[1], row[2]))  # worst recall first, then worst F1
    w = max([5, *(len(c) for c in classes)])
    lines.append(f"  {'class':<{w}}  recall  precision     F1  support")
    for r, f1, c, p, s in rows:
        lines.append(f"  {c:<{w}}  {r:6.3f}  {p:9.3f}  {f1:5.3f}  {s:7d}")

    lines.extend(ui_lines(tracking_uri, experiment_id))
    return "\n".join(lines)


def _rate(r: float, n: int, of: int) -> str:
    return "n/a" if of == 0 else f"{100 * r:.1f} % ({n}/{of})"


def inspection_line(y_true: np.ndarray, prob: np.ndarray, classes: Sequence[str], good_class: str | None,
                    threshold: float | None = None, target_escape_rate: float | None = None) -> str:
    """One line: escape and false-reject rates at argmax, then at the validation-chosen threshold, and the AUROC.

    An escape is a defective part (true class not ``good_class``) called good; a false reject a good part
    flagged (`mfexp.inspection`). Without a good class, how to name one instead."""
    good = inspection.good_index(classes, good_class)
    if good is None:
        return ("inspection: no good class, so no escape or false-reject rate: name the defect-free class with "
                "data.good_class=<class>")
    d = inspection.defective(y_true, good)
    a = inspection.rates(d, inspection.argmax_flags(prob, good))
    text = (f"inspection: escapes {_rate(a.escape_rate, a.escapes, a.defective)}, "
            f"false rejects {_rate(a.false_reject_rate, a.false_rejects, a.good)}")
    if threshold is not None:
        t = inspection.rates(d, inspection.threshold_flags(inspection.defect_scores(prob, good), threshold))
        target = f" ({100 * target_escape_rate:g} % val target)" if target_escape_rate is not None else ""
        text += (f"; at threshold {threshold:.3g}{target}: escapes {_rate(t.escape_rate, t.escapes, t.defective)}, "
                 f"false rejects {_rate(t.false_reject_rate, t.false_rejects, t.good)}")
    c = inspection.curves(d, inspection.defect_scores(prob, good))
    return text + (f"; AUROC {c.auroc:.3f}" if c is not None else "")


def ui_lines(tracking_uri: str, experiment_id: str) -> list[str]:
    """How to open this experiment's runs in the MLflow UI: a URL for a server, else a command and a URL."""
    page = f"#/experiments/{experiment_id}/runs"
    if tracking_uri.startswith(("http://", "https://")):
        return [f"MLflow UI: {tracking_uri.rstrip('/')}/{page}"]
    return [f"MLflow UI: mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}",
            f"           then open {LOCAL_UI}/{page}"]
