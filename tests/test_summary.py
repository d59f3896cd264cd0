"""The end-of-run verdict (issue 10, item 4), from synthetic predictions: no training, no MLflow store."""
from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from mfexp.summary import verdict

CLASSES = ["good", "scratch", "pit", "crack", "stain", "dent"]
SQLITE = "sqlite:////tmp/some where/mlruns/mlflow.db"  # a space: the command must quote it


def _labels(seed: int = 0) -> np.ndarray:
    """An imbalanced test split: 60 % good, the rest spread over five defect classes."""
    y = np.array([0] * 60 + [1] * 10 + [2] * 10 + [3] * 8 + [4] * 7 + [5] * 5)
    return np.random.default_rng(seed).permutation(y)


def _onehot(pred: np.ndarray, k: int = len(CLASSES)) -> np.ndarray:
    prob = np.full((len(pred), k), 0.02)
    prob[np.arange(len(pred)), pred] = 1.0
    return prob / prob.sum(axis=1, keepdims=True)


def _text(y, prob, uri=SQLITE, classes=CLASSES):
    return verdict(y, prob, classes, best_epoch=3, epochs_run=15, run_name="calm-blue-fox",
                   run_id="0123456789abcdef0123456789abcdef", experiment_id="7", tracking_uri=uri)


def _good_model(y: np.ndarray) -> np.ndarray:
    """Right on all but a few examples, with most mistakes on 'crack' (class 3)."""
    pred = y.copy()
    cracks = np.flatnonzero(y == 3)
    pred[cracks[:4]] = 0  # half the cracks called good
    pred[np.flatnonzero(y == 1)[:1]] = 2  # one scratch called pit
    pred[np.flatnonzero(y == 0)[:2]] = 4  # two good parts called stain
    return pred


def _table(text: str) -> dict[str, tuple[float, float, float, int]]:
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] in CLASSES:
            rows[parts[0]] = (float(parts[1]), float(parts[2]), float(parts[3]), int(parts[4]))
    return rows


def test_constant_predictor_is_called_out_first():
    y = _labels()
    text = _text(y, _onehot(np.zeros_like(y)))
    first = text.splitlines()[0]
    assert first.startswith("WARNING:")
    assert "always predicting 'good'" in first and "60.0 %" in first


def test_good_model_gets_no_warning():
    y = _labels()
    text = _text(y, _onehot(_good_model(y)))
    assert "WARNING" not in text and "no better than" not in text
    assert text.splitlines()[0].startswith("== run 'calm-blue-fox'")


def test_majority_class_is_found_from_the_test_split_not_class_order():
    """The majority is whichever class dominates the test labels, here 'pit' (index 2)."""
    y = np.array([2] * 30 + [0] * 5 + [1] * 5)
    text = _text(y, _onehot(np.full_like(y, 2)))
    assert "always predicting 'pit' (75.0 % of the test split)" in text.splitlines()[0]


def test_trading_a_majority_hit_for_a_minority_hit_still_warns():
    """Accuracy exactly the majority share (one good part called scratch, one scratch found): no better."""
    y = _labels()
    pred = np.zeros_like(y)
    pred[np.flatnonzero(y == 0)[0]] = 1
    pred[np.flatnonzero(y == 1)[0]] = 1
    assert accuracy_score(y, pred) == pytest.approx(0.6)
    text = _text(y, _onehot(pred))
    assert text.startswith("WARNING:")
    assert sum("WARNING" in line for line in text.splitlines()) == 1
    # One more scratch found lifts it above the majority share on both counts: no warning.
    pred[np.flatnonzero(y == 1)[1]] = 1
    assert "WARNING" not in _text(y, _onehot(pred))


def test_worst_class_first_by_recall_then_f1():
    y = _labels()
    text = _text(y, _onehot(_good_model(y)))
    rows = _table(text)
    order = list(rows)
    assert order[0] == "crack"  # recall 0.5, the only class below 0.9
    keys = [(rows[c][0], rows[c][2]) for c in order]
    assert keys == sorted(keys)
    # Ties on recall (all the perfect-recall classes) are broken by F1: 'stain' (precision < 1) before 'dent'.
    assert order.index("stain") < order.index("dent")


def test_numbers_match_sklearn():
    y = _labels(1)
    rng = np.random.default_rng(3)
    prob = rng.dirichlet(np.ones(len(CLASSES)), size=len(y))
    prob[np.arange(len(y)), y] += rng.uniform(0, 0.6, len(y))  # better than chance, far from perfect
    prob /= prob.sum(axis=1, keepdims=True)
    pred = prob.argmax(1)
    text = _text(y, prob)

    err = 100 * (1 - accuracy_score(y, pred))
    mf1 = f1_score(y, pred, labels=np.arange(len(CLASSES)), average="macro", zero_division=0)
    m = re.search(r"test error ([\d.]+) %\s+macro-F1 ([\d.]+)", text)
    assert m, text
    assert float(m.group(1)) == pytest.approx(err, abs=0.05)
    assert float(m.group(2)) == pytest.approx(mf1, abs=5e-4)

    p, r, f, s = precision_recall_fscore_support(y, pred, labels=np.arange(len(CLASSES)), zero_division=0)
    rows = _table(text)
    assert set(rows) == set(CLASSES)
    for i, c in enumerate(CLASSES):
        assert rows[c] == (pytest.approx(r[i], abs=5e-4), pytest.approx(p[i], abs=5e-4),
                           pytest.approx(f[i], abs=5e-4), s[i])
    assert "best epoch 3 of 15" in text
    assert "calm-blue-fox" in text and "0123456789abcdef0123456789abcdef" in text


def test_ui_command_for_a_local_store():
    y = _labels()
    text = _text(y, _onehot(_good_model(y)))
    assert f"mlflow ui --backend-store-uri '{SQLITE}'" in text
    assert "http://127.0.0.1:5000/#/experiments/7/runs" in text


def test_ui_url_for_a_tracking_server():
    y = _labels()
    text = _text(y, _onehot(_good_model(y)), uri="https://mlflow.example.com/")
    assert "https://mlflow.example.com/#/experiments/7/runs" in text
    assert "mlflow ui" not in text


def test_compact_for_six_classes():
    y = _labels()
    text = _text(y, _onehot(np.zeros_like(y)))
    assert len(text.splitlines()) <= 25
    assert all(len(line) <= 140 for line in text.splitlines())


# ------------------------------------------------------------------------------ inspection (issue 18)
def _inspection(text: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith("inspection")]
    return line


def test_inspection_line_counts_escapes_and_false_rejects():
    """_good_model: four of the eight cracks called good (escapes), two good parts called stain (false rejects)."""
    y = _labels()
    prob = _onehot(_good_model(y))  # P(good) 0.909 for a 'good' prediction, 0.018 otherwise: defect score 0.091 / 0.982
    text = verdict(y, prob, CLASSES, best_epoch=3, epochs_run=15, good_class="good", threshold=0.5,
                   target_escape_rate=0.01, run_name="r", run_id="i", experiment_id="7", tracking_uri=SQLITE)
    line = _inspection(text)
    assert line.startswith("inspection: escapes 10.0 % (4/40), false rejects 3.3 % (2/60); ")
    assert "at threshold 0.5 (1 % val target): escapes 10.0 % (4/40), false rejects 3.3 % (2/60)" in line
    # a threshold below every defect score flags every part: no escape, every good part rejected
    low = _inspection(verdict(y, prob, CLASSES, best_epoch=3, epochs_run=15, good_class="good", threshold=0.05,
                              run_name="r", run_id="i", experiment_id="7", tracking_uri=SQLITE))
    assert "at threshold 0.05: escapes 0.0 % (0/40), false rejects 100.0 % (60/60)" in low


def test_inspection_line_without_a_good_class_says_how_to_name_one():
    y = _labels()
    line = _inspection(_text(y, _onehot(_good_model(y))))
    assert "no good class" in line and "data.good_class=<class>" in line and "escapes" not in line


def test_inspection_line_when_the_test_split_has_no_defective_part():
    y = np.zeros(10, dtype=np.int64)
    line = _inspection(verdict(y, _onehot(y), CLASSES, best_epoch=1, epochs_run=1, good_class="good", run_name="r",
                               run_id="i", experiment_id="7", tracking_uri=SQLITE))
    assert line == "inspection: escapes n/a, false rejects 0.0 % (0/10)"
