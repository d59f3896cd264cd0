"""The ranking check that acts (issue 11, item 3): verdict, Spearman's rho of screening vs full budget, the report.

No training. The pure functions of the search are called directly; the end of a sweep is played with
the sweeper's own `SweepRun` on runs made directly in a fresh MLflow store (as tests/test_report_plugin.py
does), and the report is built from them: the full-budget runs get made-up test predictions as artifacts.
"""
from __future__ import annotations

import pytest
from hydra_plugins.mfexp_sweeper.search import (
    RankPair,
    rank_agreement,
    rank_pairs,
    ranking_verdict,
)
from scipy.stats import spearmanr


# ------------------------------------------------------------------------------ the verdict line
def test_verdict_when_the_searched_policy_lost_to_the_baseline():
    line = ranking_verdict({"baseline": 0.380, "final": 0.412, "reference": 0.450}, "baseline")
    assert line == "the searched policy lost at full budget: val loss 0.4120 vs baseline 0.3800; the baseline is kept"


def test_verdict_when_the_searched_policy_lost_to_the_trivial_reference():
    line = ranking_verdict({"baseline": 0.380, "final": 0.375, "reference": 0.350}, "reference")
    assert line == ("the searched policy lost at full budget: val loss 0.3750 vs trivial reference 0.3500 "
                    "(baseline 0.3800); the trivial reference is kept")


def test_verdict_when_the_searched_policy_won():
    line = ranking_verdict({"baseline": 0.380, "final": 0.350, "reference": 0.400}, "final")
    assert line == ("the searched policy held at full budget: val loss 0.3500 vs baseline 0.3800 and trivial "
                    "reference 0.4000; the searched policy is kept")


def test_verdict_when_nothing_was_kept():
    assert ranking_verdict({"baseline": 0.38, "reference": 0.40}, "baseline") == (
        "the search kept no technique and the baseline held at full budget: val loss 0.3800 vs trivial reference "
        "0.4000; the baseline is kept")
    assert ranking_verdict({"baseline": 0.38, "reference": 0.35}, "reference") == (
        "the search kept no technique and the trivial reference beat the baseline at full budget: val loss 0.3500 "
        "vs 0.3800; the trivial reference is kept")


def test_a_tie_on_val_loss_says_what_decided():
    line = ranking_verdict({"baseline": 0.38, "final": 0.38}, "baseline")
    assert "tie on val loss" in line and line.endswith("the baseline is kept")


# ------------------------------------------------------------------------------ Spearman's rho
def _pair(role: str, screen: float, full: float, policy: str | None = None) -> RankPair:
    return RankPair(policy or f"{role}-policy", role, f"{role}-run", full, (f"{role}-screen",), screen)


def test_rho_with_three_or_more_pairs_is_scipys_spearman():
    screen, full = [0.50, 0.40, 0.60, 0.45], [0.30, 0.35, 0.32, 0.31]
    pairs = [_pair(r, s, f, f"p{i}") for i, (r, s, f) in enumerate(zip(["baseline", "final", "reference", "final"], screen, full))]
    got = rank_agreement(pairs)
    expected = spearmanr(screen, full).statistic
    assert got.rho == pytest.approx(expected, abs=1e-12)
    assert got.rho == pytest.approx(-0.4)  # hand-computed: ranks (3,1,4,2) vs (1,4,3,2)
    assert f"Spearman's rho {expected:+.2f}" in got.text and "over 4 policies" in got.text


def test_rho_is_undefined_below_three_pairs_and_says_why():
    got = rank_agreement([_pair("baseline", 0.6, 0.38), _pair("final", 0.5, 0.41)], unscreened=["reference"])
    assert got.rho is None
    assert got.text.startswith("Spearman's rho undefined: 2 policies trained at both fidelities")
    assert "it needs at least 3" in got.text
    assert "the two disagree on their order" in got.text  # screening said final < baseline, full budget the reverse
    assert got.text.endswith("not screened: trivial reference")
    one = rank_agreement([_pair("baseline", 0.6, 0.38)])
    assert one.rho is None and "1 policy trained" in one.text


def test_rho_is_undefined_when_one_fidelity_has_no_spread():
    got = rank_agreement([_pair("baseline", 0.5, 0.3, "a"), _pair("final", 0.5, 0.4, "b"), _pair("reference", 0.5, 0.2, "c")])
    assert got.rho is None and "equal validation losses" in got.text


def test_pairs_match_policies_at_the_top_rung_and_average_the_seeds():
    full = {"baseline": ("plain", "b", 0.38), "final": ("flip", "f", 0.41), "reference": ("trivial", "r", 0.40)}
    screening = [("plain", 1, "s0", 0.60), ("plain", 1, "s1", 0.64),  # no-policy runs at two seeds
                 ("flip", 0, "low", 0.10),  # a lower rung: another fidelity, left out
                 ("flip", 1, "top", 0.55), ("rotate", 1, "other", 0.70)]
    pairs, unscreened = rank_pairs(full, screening)
    assert [(p.role, p.screen_run_ids, p.screen_loss, p.full_run_id) for p in pairs] == [
        ("baseline", ("s0", "s1"), pytest.approx(0.62), "b"), ("final", ("top",), 0.55, "f")]
    assert unscreened == ["reference"]
