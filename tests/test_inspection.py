"""Inspection metrics, the threshold choice and the gallery's order (issue 18), against values worked out by hand.

No training and no MLflow store: eight test parts whose probabilities are exact binary fractions, so
every defect score, tie and rate below is exact. Classes: good (0), crack (1), pit (2).

    part  true   P(good, crack, pit)        defect score  argmax
    0     good   0.875  0.0625 0.0625       0.125         good
    1     good   0.625  0.25   0.125        0.375         good
    2     good   0.25   0.625  0.125        0.75          crack  <- false reject
    3     good   0.75   0.125  0.125        0.25          good
    4     crack  0.5    0.375  0.125        0.5           good   <- escape
    5     crack  0.125  0.75   0.125        0.875         crack
    6     pit    0.375  0.125  0.5          0.625         pit
    7     pit    0.25   0.5    0.25         0.75          crack  (wrong defect class, still rejected)
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from mfexp import gallery
from mfexp import inspection as insp

CLASSES = ["good", "crack", "pit"]
PROB = np.array([[0.875, 0.0625, 0.0625], [0.625, 0.25, 0.125], [0.25, 0.625, 0.125], [0.75, 0.125, 0.125],
                 [0.5, 0.375, 0.125], [0.125, 0.75, 0.125], [0.375, 0.125, 0.5], [0.25, 0.5, 0.25]])
Y = np.array([0, 0, 0, 0, 1, 1, 2, 2])


def test_scores_and_rates_at_argmax():
    assert insp.defect_scores(PROB, 0).tolist() == [0.125, 0.375, 0.75, 0.25, 0.5, 0.875, 0.625, 0.75]
    r = insp.rates(insp.defective(Y, 0), insp.argmax_flags(PROB, 0))
    assert (r.escapes, r.defective, r.false_rejects, r.good) == (1, 4, 1, 4)  # part 4 escapes, part 2 is rejected
    assert (r.escape_rate, r.false_reject_rate) == (0.25, 0.25)


def test_a_tie_with_the_threshold_is_flagged():
    scores, d = insp.defect_scores(PROB, 0), insp.defective(Y, 0)
    at = insp.rates(d, insp.threshold_flags(scores, 0.5))  # part 4 scores exactly 0.5: flagged, no escape
    assert (at.escapes, at.false_rejects) == (0, 1)
    above = insp.rates(d, insp.threshold_flags(scores, 0.625))
    assert (above.escapes, above.false_rejects) == (1, 1)
    both = insp.rates(d, insp.threshold_flags(scores, 0.75))  # part 2 (good) and part 7 (pit) tie at 0.75
    assert (both.escapes, both.false_rejects) == (2, 1)


def test_metrics_logged_for_a_split():
    m = insp.inspection_metrics(Y, PROB, good=0, threshold=0.5)
    assert m == {"test_escape_rate": 0.25, "test_false_reject_rate": 0.25, "test_escape_rate_at_threshold": 0.0,
                 "test_false_reject_rate_at_threshold": 0.25,
                 # 13.5 of the 16 defective/good pairs ranked right (part 7 ties part 2: half a pair)
                 "test_defect_auroc": 13.5 / 16,
                 # precision at each recall step, scores descending: 1/1, 2/3, 3/4, 4/5, each for a quarter of recall
                 "test_defect_average_precision": pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 5) / 4, abs=1e-12)}
    for key in m:
        assert all(ch.isalnum() or ch in "_-. :/" for ch in key)  # an MLflow metric name


def test_undefined_rates_are_left_out():
    good_only = insp.inspection_metrics(Y[:4], PROB[:4], good=0, threshold=0.5)
    assert good_only == {"test_false_reject_rate": 0.25, "test_false_reject_rate_at_threshold": 0.25}
    assert math.isnan(insp.rates(np.zeros(3, bool), np.zeros(3, bool)).escape_rate)
    assert insp.curves(np.ones(3, bool), np.arange(3.0)) is None


@pytest.mark.parametrize("target, threshold, escapes", [
    (0.0, 0.5, 0),     # no escape allowed: the lowest defective score, 0.5
    (0.2, 0.5, 0),     # 0.2 x 4 = 0.8: still no escape allowed
    (0.25, 0.625, 1),  # one escape allowed: the second lowest, 0.625 (0.5 passes)
    (0.5, 0.75, 2),
    (0.99, 0.875, 3),
])
def test_threshold_is_the_highest_that_meets_the_target(target, threshold, escapes):
    scores, d = insp.defect_scores(PROB, 0), insp.defective(Y, 0)
    t = insp.choose_threshold(scores, d, target)
    assert t == threshold
    assert insp.rates(d, insp.threshold_flags(scores, t)).escapes == escapes
    higher = insp.rates(d, insp.threshold_flags(scores, np.nextafter(t, 2.0)))
    assert higher.escape_rate > target  # any higher threshold misses the target


def test_threshold_with_tied_defect_scores():
    scores = np.array([0.5, 0.5, 0.75, 0.875, 0.1])
    d = np.array([True, True, True, True, False])
    assert insp.choose_threshold(scores, d, 0.25) == 0.5  # one escape allowed, but the two at 0.5 pass together
    assert insp.rates(d, insp.threshold_flags(scores, 0.5)).escapes == 0
    assert insp.choose_threshold(scores, d, 0.5) == 0.75  # two allowed: both 0.5 parts pass


def test_threshold_allows_exactly_the_share_despite_float_rounding():
    scores, d = np.arange(100) / 100, np.ones(100, bool)  # 0.29 * 100 is 28.999999999999996 in floating point
    t = insp.choose_threshold(scores, d, 0.29)
    assert insp.rates(d, insp.threshold_flags(scores, t)).escape_rate == 0.29


def test_threshold_refuses_what_it_cannot_choose():
    with pytest.raises(ValueError, match="no defective part"):
        insp.choose_threshold(np.array([0.1, 0.2]), np.array([False, False]), 0.01)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        insp.choose_threshold(np.array([0.1]), np.array([True]), 1.0)


def test_validation_threshold_and_its_metrics():
    t, m = insp.validation_threshold(Y, PROB, 0, 0.25)
    assert t == 0.625 and m["defect_threshold"] == 0.625
    assert m["val_escape_rate_at_threshold"] == 0.25 and m["val_false_reject_rate_at_threshold"] == 0.25
    assert insp.validation_threshold(Y[:4], PROB[:4], 0, 0.01) == (None, {})  # no defective part to choose from


def test_good_index():
    assert insp.good_index(CLASSES, "good") == 0 and insp.good_index(CLASSES, None) is None
    with pytest.raises(ValueError, match="not one of the classes"):
        insp.good_index(CLASSES, "ok")


# -------------------------------------------------------------------------------- the gallery
PROB9 = np.vstack([PROB, [0.75, 0.125, 0.125]])  # part 8: a crack called good at 75 %, the most confident escape
Y9 = np.append(Y, 1)


def test_mistakes_worst_first_escapes_then_false_rejects_then_wrong_defect():
    m = gallery.find_mistakes(Y9, PROB9, good=0, limit=10)
    assert m.index.tolist() == [8, 4, 2, 7] and m.total == 4
    assert m.kind.tolist() == [gallery.ESCAPE, gallery.ESCAPE, gallery.FALSE_REJECT, gallery.WRONG_DEFECT]
    assert m.confidence.tolist() == [0.75, 0.5, 0.625, 0.5]
    assert m.y_true.tolist() == [1, 1, 0, 2] and m.y_pred.tolist() == [0, 0, 1, 1]


def test_mistakes_without_a_good_class_by_confidence_then_row():
    m = gallery.find_mistakes(Y9, PROB9, good=None, limit=10)
    assert m.index.tolist() == [8, 2, 4, 7]  # 4 and 7 tie at 0.5: test-split order
    assert set(m.kind) == {gallery.WRONG_CLASS}


def test_mistakes_are_capped_and_say_how_many_there_were():
    m = gallery.find_mistakes(Y9, PROB9, good=0, limit=2)
    assert m.index.tolist() == [8, 4] and m.total == 4
    assert len(gallery.find_mistakes(Y, np.eye(3)[Y], good=0, limit=5)) == 0


def test_gallery_data_round_trips_and_thumbnails_stay_small(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (4, 200, 200, 3), dtype=np.uint8)
    thumbs = gallery.thumbnails(big)
    assert thumbs.shape == (4, gallery.THUMB, gallery.THUMB, 3) and thumbs.dtype == np.uint8
    small = rng.integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
    assert np.array_equal(gallery.thumbnails(small), small)
    m = gallery.find_mistakes(Y9, PROB9, good=0, limit=10)
    gallery.save(tmp_path / "m.npz", m, small, CLASSES, "good")
    back, images = gallery.load(tmp_path / "m.npz")
    assert np.array_equal(images, small) and back.total == 4
    for field in ("index", "y_true", "y_pred", "confidence", "kind"):
        assert np.array_equal(getattr(back, field), getattr(m, field)), field


def test_gallery_figure_draws_every_mistake_and_the_empty_case():
    import matplotlib.pyplot as plt

    m = gallery.find_mistakes(Y9, PROB9, good=0, limit=10)
    fig = gallery.run_figure(m, np.zeros((4, 16, 16, 1), np.uint8), CLASSES, "good", "baseline: calm-blue-fox")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["crack → good\n75%", "crack → good\n50%", "good → crack\n62%", "pit → crack\n50%"]
    assert "all 4 test mistakes" in fig._suptitle.get_text()
    plt.close(fig)
    fig = gallery.run_figure(gallery.find_mistakes(Y9, PROB9, 0, 1), np.zeros((1, 16, 16, 1), np.uint8), CLASSES,
                             "good", "x")
    assert "the worst 1 of 4 (inspection.gallery_size)" in fig._suptitle.get_text()
    plt.close(fig)
    empty = gallery.find_mistakes(Y, np.eye(3)[Y], 0, 10)
    fig = gallery.run_figure(empty, np.zeros((0, 16, 16, 1), np.uint8), CLASSES, "good", "x")
    assert any("no test image is predicted wrong" in t.get_text() for ax in fig.axes for t in ax.texts)
    plt.close(fig)


@pytest.mark.parametrize("override, message", [
    ("inspection.target_escape_rate=1.5", r"inspection.target_escape_rate=1.5: must be in \[0, 1\)"),
    ("inspection.target_escape_rate=-0.01", "inspection.target_escape_rate=-0.01"),
    ("inspection.gallery_size=-1", "inspection.gallery_size=-1: must be 0"),
])
def test_bad_settings_fail_before_any_run(mlflow_store, compose_cfg, override, message):
    from conftest import TINY_DEMO, TINY_TRAIN

    from mfexp.errors import ConfigError
    from mfexp.run import run

    with pytest.raises(ConfigError, match=message):
        run(compose_cfg(*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides, override))
    assert mlflow_store.runs() == []
