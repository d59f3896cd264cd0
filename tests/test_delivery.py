"""The delivery rule (``plugins/hydra_plugins/mfexp_sweeper/delivery.py``): what a sweep delivers, on paired validation outcomes.

No training: outcomes are built by hand so every expected decision can be worked out on paper.
"""
from __future__ import annotations

import numpy as np
import pytest
from hydra_plugins.mfexp_sweeper.delivery import RULES, Outcomes, decide


def outcomes(name: str, nll: list[float], wrong: list[int]) -> Outcomes:
    return Outcomes(name, np.asarray(nll, float), np.asarray(wrong, bool))


N = 40
BASE = outcomes("baseline", [0.5] * N, [1] * 6 + [0] * (N - 6))  # loss 0.5, 6 errors


def test_outcomes_from_probabilities_are_the_true_class_cross_entropy_and_the_argmax_errors():
    o = Outcomes.of("p", [0, 1, 1], [[0.8, 0.2], [0.9, 0.1], [0.25, 0.75]])
    assert o.nll == pytest.approx([-np.log(0.8), -np.log(0.1), -np.log(0.75)])
    assert o.wrong.tolist() == [False, True, False] and o.errors == 1
    assert o.loss == pytest.approx(np.mean([-np.log(0.8), -np.log(0.1), -np.log(0.75)]))


def test_a_challenger_better_on_every_image_is_delivered():
    better = outcomes("nested-1", [0.3] * N, [1] * 2 + [0] * (N - 2))  # 4 fewer errors, lower loss on every image
    d = decide(BASE, [better], "paired")
    assert d.delivered == "nested-1"
    (c,) = d.comparisons
    assert c.passed and c.error_gain == 4 and c.loss_gain == pytest.approx(0.2)
    assert c.loss_gain_low == pytest.approx(0.2)  # no spread in the per-image gains: the bound is the gain
    assert d.reason.startswith("nested-1 is delivered: it beat the baseline on the 40 validation images by rule 'paired'")


def test_a_lower_mean_loss_that_rests_on_a_few_images_is_noise_for_the_paired_rule_and_enough_for_val_loss():
    # Two images improve a lot, the rest get slightly worse: the mean drops, the per-image gains are all over.
    nll = [0.51] * (N - 2) + [0.0, 0.0]
    lucky = outcomes("diverse", nll, [1] * 5 + [0] * (N - 5))  # one error fewer
    assert lucky.loss < BASE.loss
    paired = decide(BASE, [lucky], "paired")
    assert paired.delivered == "baseline" and not paired.comparisons[0].passed
    assert paired.comparisons[0].loss_gain_low < 0 < paired.comparisons[0].loss_gain
    assert paired.reason.startswith("the baseline is delivered: no policy beat it on the 40 validation images")
    assert "closest: diverse" in paired.reason
    assert decide(BASE, [lucky], "val_loss").delivered == "diverse"  # the old rule takes any lower mean


def test_more_errors_block_delivery_under_the_paired_rule_however_low_the_loss():
    confident = outcomes("rr-1", [0.2] * N, [1] * 7 + [0] * (N - 7))  # lower loss everywhere, one error more
    assert decide(BASE, [confident], "paired").delivered == "baseline"
    assert decide(BASE, [confident], "val_error").delivered == "baseline"
    assert decide(BASE, [confident], "val_loss").delivered == "rr-1"


def test_bonferroni_raises_the_level_with_the_number_of_challengers_and_can_turn_a_pass_into_a_fail():
    rng = np.random.default_rng(0)
    gain = 0.05 + rng.normal(0, 0.25, N)  # a small real gain in heavy noise
    ok = outcomes("a", 0.5 - gain, [1] * 5 + [0] * (N - 5))
    others = [outcomes(n, [0.6] * N, [1] * 9 + [0] * (N - 9)) for n in "bcd"]
    alone = decide(BASE, [ok], "paired", level=0.9)
    crowd = decide(BASE, [ok, *others], "paired", level=0.9)
    assert alone.level == pytest.approx(0.9) and crowd.level == pytest.approx(1 - 0.1 / 4)
    assert crowd.comparisons[0].loss_gain_low < alone.comparisons[0].loss_gain_low  # a stricter bound, same data
    uncorrected = decide(BASE, [ok, *others], "paired", level=0.9, correct=False)
    assert uncorrected.level == pytest.approx(0.9)


def test_among_challengers_that_pass_the_fewest_errors_win_then_the_lower_loss():
    a = outcomes("a", [0.30] * N, [1] * 3 + [0] * (N - 3))
    b = outcomes("b", [0.35] * N, [1] * 2 + [0] * (N - 2))
    c = outcomes("c", [0.20] * N, [1] * 3 + [0] * (N - 3))
    assert decide(BASE, [a, b, c], "paired").delivered == "b"
    assert decide(BASE, [a, c], "paired").delivered == "c"
    assert decide(BASE, [a, b, c], "val_loss").delivered == "c"


def test_the_paired_error_rule_needs_an_error_reduction_beyond_resampling_noise():
    one_fewer = outcomes("x", [0.4] * N, [1] * 5 + [0] * (N - 5))
    many_fewer = outcomes("y", [0.4] * N, [0] * N)  # all 6 baseline errors fixed, none made
    assert decide(BASE, [one_fewer], "paired_error").delivered == "baseline"
    assert decide(BASE, [many_fewer], "paired_error").delivered == "y"


def test_no_challenger_delivers_the_baseline_and_bad_input_is_refused():
    assert decide(BASE, [], "paired").delivered == "baseline"
    assert "no other policy was trained" in decide(BASE, [], "paired").reason
    with pytest.raises(ValueError, match="search.delivery_rule=best"):
        decide(BASE, [], "best")
    with pytest.raises(ValueError, match="different validation images"):
        decide(BASE, [outcomes("short", [0.1], [0])], "paired")
    assert set(RULES) == {"paired", "paired_error", "mcnemar", "val_error", "val_loss"}


def test_mcnemar_counts_the_images_exactly_one_of_the_two_gets_wrong():
    # 6 baseline errors; the challenger fixes 5 of them and breaks 0: p = 0.5^5 = 1/32 one-sided
    fixes = outcomes("fix5", [0.4] * N, [1] + [0] * (N - 1))
    d = decide(BASE, [fixes], "mcnemar", level=0.95)
    (c,) = d.comparisons
    assert c.p_value == pytest.approx(1 / 32) and c.passed and d.delivered == "fix5"
    assert "5 fixed and 0 broken" in c.why
    # 5 fixed but 2 others broken: 7 discordant images, P(X >= 5 | n=7, 1/2) = (21 + 7 + 1) / 128
    mixed = outcomes("mixed", [0.4] * N, [1] + [0] * 5 + [1, 1] + [0] * (N - 8))
    (m,) = decide(BASE, [mixed], "mcnemar", level=0.95).comparisons
    assert m.errors == 3 and m.p_value == pytest.approx(29 / 128) and not m.passed
    assert decide(BASE, [BASE], "mcnemar").comparisons[0].p_value == 1.0  # nothing discordant
