"""Classification metrics from predictions (scikit-learn), and the confusion-matrix figure.

The same functions serve the training run (from live predictions) and the report (from the
predictions logged to MLflow), so the two can never disagree.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from mfexp.names import key_names


def classification_metrics(y_true: np.ndarray, prob: np.ndarray, classes: Sequence[str], prefix: str = "test_") -> dict[str, float]:
    """Loss, accuracy, error rate, macro F1 and per-class precision/recall/support.

    Per-class keys carry the class name (``test_recall/scratch``) so the MLflow UI groups them, as
    `mfexp.names.key_names` makes it safe for every MLflow store (``test_recall/scratch_minor-5c0d5a``).
    """
    labels = np.arange(len(classes))
    prob = prob / prob.sum(axis=1, keepdims=True)  # float32 softmax rounding; sklearn wants rows summing to 1
    y_pred = prob.argmax(axis=1)
    p, r, _, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    acc = accuracy_score(y_true, y_pred)
    out = {
        f"{prefix}loss": float(log_loss(y_true, np.clip(prob, 1e-12, 1.0), labels=labels)),
        f"{prefix}accuracy": float(acc),
        f"{prefix}error_rate": float(1.0 - acc),
        f"{prefix}macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    safe = key_names(classes)
    for c, pi, ri, si in zip((safe[c] for c in classes), p, r, s):
        out[f"{prefix}precision/{c}"] = float(pi)
        out[f"{prefix}recall/{c}"] = float(ri)
        out[f"{prefix}support/{c}"] = float(si)
    return out


def predictions_frame(y_true: np.ndarray, prob: np.ndarray, classes: Sequence[str], paths: Sequence[str] = ()) -> pd.DataFrame:
    """One row per example: its file (``path``, relative to the data folder, when ``paths`` are given),
    true label, predicted label and each class's probability (columns ``prob/<class>``, original names)."""
    df = pd.DataFrame(prob, columns=[f"prob/{c}" for c in classes])
    df.insert(0, "y_pred", prob.argmax(axis=1))
    df.insert(0, "y_true", y_true)
    if len(paths):
        df.insert(0, "path", list(paths))
    return df


def frame_to_arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    cols = [c for c in df.columns if c.startswith("prob/")]
    return df["y_true"].to_numpy(np.int64), df[cols].to_numpy(np.float64), [c[len("prob/"):] for c in cols]


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], title: str = "Confusion matrix", ax=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    cm = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
    fig = None
    if ax is None:
        side = 1.6 + 0.6 * len(classes)
        fig, ax = plt.subplots(figsize=(side + 1, side))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, xticklabels=classes, yticklabels=classes, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if fig is not None:
        fig.tight_layout()
    return fig
