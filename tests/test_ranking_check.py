"""The ranking check (issue 11) and the delivery decision (issue 16) of a screening sweep: Spearman's rho, the report.

No training. The pure functions of the search are called directly; the end of a sweep is played with
the sweeper's own `SweepRun` on runs made directly in a fresh MLflow store (as tests/test_report_plugin.py
does), and the report is built from them: the full-budget runs get made-up test predictions as artifacts.
"""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DEMO
from hydra_plugins.mfexp_sweeper.search import (
    Candidate,
    Outcome,
    RankPair,
    Result,
    rank_agreement,
    rank_pairs,
)
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from mfexp import keys


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


# ------------------------------------------------------------------------------ the sweep run in MLflow
CLASSES = ["good", "scratch", "pit"]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2, 0, 1, 2, 0])


N_VAL = 20
VAL_TRUE = np.arange(N_VAL) % len(CLASSES)


def _val_frame(nll: np.ndarray, wrong: np.ndarray):
    """Validation predictions whose true-class loss is ``nll`` per image and whose argmax is wrong where ``wrong``."""
    import pandas as pd

    prob = np.zeros((N_VAL, len(CLASSES)))
    p_true = np.exp(-nll)
    other = (VAL_TRUE + 1) % len(CLASSES)
    prob[np.arange(N_VAL), VAL_TRUE] = p_true
    prob[np.arange(N_VAL), other] = 1 - p_true
    assert np.array_equal(prob.argmax(1) != VAL_TRUE, wrong), "nll and wrong must agree"
    frame = pd.DataFrame(prob, columns=[f"prob/{k}" for k in CLASSES])
    frame.insert(0, "y_pred", prob.argmax(1))
    frame.insert(0, "y_true", VAL_TRUE)
    return frame


def val_outcome(loss: float, errors: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image losses with mean ``loss`` and ``errors`` wrong images (true-class probability 0.2 there)."""
    wrong = np.arange(N_VAL) < errors
    rest = (N_VAL * loss + errors * np.log(0.2)) / (N_VAL - errors)
    return np.where(wrong, -np.log(0.2), rest), wrong


def _full_run(c, run, role: str, policy: str, val: tuple[np.ndarray, np.ndarray], flips: int) -> str:
    """A finished full-budget child with test metrics and the artifacts the report and the delivery rule read."""
    import pandas as pd

    from mfexp.metrics import classification_metrics

    val_loss = float(val[0].mean())

    rid = c.create_run(run.experiment_id, tags={keys.TAG_ROLE: role, keys.TAG_PARENT: run.run_id, keys.TAG_POLICY: policy,
                                                keys.TAG_FINGERPRINT: run.fingerprint}).info.run_id
    y_pred = Y_TRUE.copy()
    y_pred[:flips] = (y_pred[:flips] + 1) % len(CLASSES)  # `flips` wrong predictions
    prob = np.full((len(Y_TRUE), len(CLASSES)), 0.1)
    prob[np.arange(len(Y_TRUE)), y_pred] = 0.8
    frame = pd.DataFrame(prob, columns=[f"prob/{k}" for k in CLASSES])
    frame.insert(0, "y_pred", y_pred)
    frame.insert(0, "y_true", Y_TRUE)
    c.log_text(rid, frame.to_csv(index=False), "test_predictions.csv")
    c.log_text(rid, _val_frame(*val).to_csv(index=False), keys.VAL_PREDICTIONS)
    c.log_dict(rid, {"classes": CLASSES, "good_class": "good"}, "dataset.json")
    c.log_dict(rid, {"mode": "all", "canonical": {}, "name": policy}, "policy.json")
    for k, v in {**classification_metrics(Y_TRUE, prob, CLASSES, prefix="test_"), keys.BEST_VAL_LOSS: val_loss,
                 keys.TRAIN_SECONDS: 1.0}.items():
        c.log_metric(rid, k, v)
    c.set_terminated(rid, "FINISHED")
    return rid


def _screen_run(c, run, policy: str, rung: int, stage: int, val_loss: float, winner: bool = False) -> str:
    tags = {keys.TAG_ROLE: "candidate", keys.TAG_PARENT: run.run_id, keys.TAG_POLICY: policy, keys.TAG_RUNG: str(rung),
            keys.TAG_STAGE: str(stage), keys.TAG_TECHNIQUE: "none" if stage == 0 else "flip",
            keys.TAG_FIDELITY: f"e{rung + 1}-s0.5"}
    if winner:
        tags[keys.TAG_STAGE_WINNER] = "true"
    rid = c.create_run(run.experiment_id, tags=tags).info.run_id
    c.log_metric(rid, keys.BEST_VAL_LOSS, val_loss)
    c.log_metric(rid, keys.EPOCHS_RUN, rung + 1)
    c.set_terminated(rid, "FINISHED")
    return rid


def _play_sweep(compose_cfg, store, sweep_dir: Path, full_val: dict[str, tuple], screen_loss: dict[str, float]):
    """A sweep of the no-policy runs (two seeds), one kept flip stage and the trivial reference, all made up.

    ``full_val``: role -> its validation outcome (per-image losses, wrong or not; `val_outcome`);
    ``screen_loss``: policy -> top-rung screening val loss (the reference's policy is screened only when
    it is in ``screen_loss``). The sweep's own delivery rule (search.delivery_rule) decides."""
    from hydra_plugins.mfexp_sweeper.sweep_run import SweepRun

    cfg = compose_cfg(*TINY_DEMO, "data.image_size=16", *store.overrides)
    # The composed search node as is (already typed by its schema): merging it with a freshly imported
    # SearchConf breaks when Hydra's plugin scan has executed the sweeper's config module a second time.
    settings = OmegaConf.to_container(cfg.search, resolve=True)
    policy = {"baseline": "plain-plain-baseline", "final": "flashy-flip-falcon", "reference": "trivial-trivial-tiger"}
    with SweepRun(cfg, settings, [], sweep_dir) as run:
        c = run.client
        s0 = _screen_run(c, run, policy["baseline"], 1, 0, screen_loss[policy["baseline"]], winner=True)
        _screen_run(c, run, policy["baseline"], 1, 0, screen_loss[policy["baseline"]] + 0.02)  # seed 1
        _screen_run(c, run, policy["final"], 0, 1, 0.01)  # lower rung: never paired
        s1 = _screen_run(c, run, policy["final"], 1, 1, screen_loss[policy["final"]], winner=True)
        if policy["reference"] in screen_loss:
            _screen_run(c, run, policy["reference"], 1, 2, screen_loss[policy["reference"]])
        ids = {role: _full_run(c, run, role, policy[role], val, flips)
               for (role, val), flips in zip(full_val.items(), (3, 2, 4))}
        incumbent = Result(Candidate((("flip", "rr", 0.5),), 1, 0, 1, "flip"), screen_loss[policy["final"]], s1)
        base = Result(Candidate((), 1), screen_loss[policy["baseline"]], s0)
        outcome = Outcome((("flip", "rr", 0.5),), ["flip"], {}, [], 0.01, 0.01, base, incumbent)
        full = {role: Result(Candidate((), -1), float(val[0].mean()), ids[role]) for role, val in full_val.items()}
        decision = run.decide(full["baseline"], {r: full[r] for r in ("final", "reference") if r in full},
                              settings["delivery_rule"], settings["delivery_level"], settings["delivery_correct"])
        run.finish(outcome, full["baseline"], full.get("final"), full.get("reference"), decision, run.cost(1, 1.0),
                   None, None)
    return run.run_id, ids, store.client().get_run(run.run_id), policy


LOST = {"baseline": val_outcome(0.380, 2), "final": val_outcome(0.412, 2), "reference": val_outcome(0.450, 3)}
# final: the baseline's two errors fixed, every image's loss lower by 0.03 or more: better beyond noise
WON = {"baseline": val_outcome(0.380, 2), "final": (val_outcome(0.380, 2)[0] - np.where(np.arange(N_VAL) < 2, 1.2, 0.03),
                                                    np.zeros(N_VAL, bool)), "reference": val_outcome(0.400, 2)}


def test_a_sweep_whose_policy_lost_says_why_in_mlflow_and_on_the_console(compose_cfg, mlflow_store, tmp_path, capsys):
    sid, ids, sweep, _ = _play_sweep(compose_cfg, mlflow_store, tmp_path / "multirun", LOST,
                                     {"plain-plain-baseline": 0.60, "flashy-flip-falcon": 0.50})
    tags, metrics = sweep.data.tags, sweep.data.metrics
    assert tags[keys.TAG_BEST_ROLE] == "baseline" and tags[keys.TAG_RANKING_HELD] == "false"
    assert tags[keys.TAG_DELIVERED] == "baseline" and tags[keys.TAG_DELIVERY_RULE] == "paired"
    assert tags[keys.TAG_RANKING_VERDICT].startswith(
        "the baseline is delivered: no policy beat it on the 20 validation images by rule 'paired' (closest: final, "
        "2 vs 2 validation errors")
    delivery = json.loads(tags[keys.TAG_DELIVERY])
    assert delivery["baseline"]["run_id"] == ids["baseline"] and delivery["baseline"]["val_errors"] == 2
    assert {c["name"]: (c["run_id"], c["passed"]) for c in delivery["challengers"]} == {
        "final": (ids["final"], False), "reference": (ids["reference"], False)}
    # Two policies were trained at both fidelities (no policy, flip): rho is undefined, not a made-up number.
    assert metrics[keys.CHECK_RANK_PAIRS] == 2
    assert keys.CHECK_SPEARMAN_RHO not in metrics
    assert tags[keys.TAG_RANKING_AGREEMENT].startswith("Spearman's rho undefined: 2 policies trained at both fidelities")
    assert tags[keys.TAG_RANKING_AGREEMENT].endswith("the two disagree on their order; not screened: trivial reference")
    pairs = json.loads(tags[keys.TAG_RANKING_PAIRS])
    assert [(p["role"], p["full_run_id"], len(p["screen_run_ids"])) for p in pairs] == [
        ("baseline", ids["baseline"], 2), ("final", ids["final"], 1)]
    assert pairs[0]["screen_loss"] == pytest.approx(0.61)
    out = capsys.readouterr().out
    assert f"  why: {tags[keys.TAG_RANKING_VERDICT]}\n" in out
    assert f"  screening vs full budget: {tags[keys.TAG_RANKING_AGREEMENT]}\n" in out


def test_a_sweep_whose_policy_won_logs_spearmans_rho_over_three_policies(compose_cfg, mlflow_store, tmp_path, capsys):
    screen = {"plain-plain-baseline": 0.60, "flashy-flip-falcon": 0.50, "trivial-trivial-tiger": 0.55}
    sid, ids, sweep, policy = _play_sweep(compose_cfg, mlflow_store, tmp_path / "multirun", WON, screen)
    tags, metrics = sweep.data.tags, sweep.data.metrics
    assert tags[keys.TAG_BEST_ROLE] == "final" and tags[keys.TAG_DELIVERED] == "final"
    assert tags[keys.TAG_BEST_RUN] == ids["final"]
    assert tags[keys.TAG_RANKING_VERDICT].startswith(
        "final is delivered: it beat the baseline on the 20 validation images by rule 'paired' (0 vs 2 validation errors")
    full = {role: float(val[0].mean()) for role, val in WON.items()}
    means = [0.61, 0.50, 0.55]  # the no-policy screening value is the mean of its two seeds
    expected = spearmanr(means, [full[r] for r in ("baseline", "final", "reference")]).statistic
    assert metrics[keys.CHECK_RANK_PAIRS] == 3
    assert metrics[keys.CHECK_SPEARMAN_RHO] == pytest.approx(expected) == pytest.approx(0.5)
    assert tags[keys.TAG_RANKING_AGREEMENT].startswith("Spearman's rho +0.50 between screening and full-budget val loss "
                                                       "over 3 policies")
    assert f"  why: {tags[keys.TAG_RANKING_VERDICT]}\n" in capsys.readouterr().out


# ------------------------------------------------------------------------------ the report
class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells: list[dict] = []
        self.tagged: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-value" in a:
            self.cells.append(a)
        if "data-tag" in a:
            self._open = a["data-tag"]
            self.tagged[self._open] = ""

    def handle_data(self, data):
        if self._open:
            self.tagged[self._open] += data

    def handle_endtag(self, tag):
        if tag in ("div", "p"):
            self._open = None


def test_the_report_shows_rho_and_the_verdict_with_their_provenance(compose_cfg, mlflow_store, tmp_path):
    from mfexp.report import build_report

    screen = {"plain-plain-baseline": 0.60, "flashy-flip-falcon": 0.50, "trivial-trivial-tiger": 0.55}
    sid, ids, sweep, _ = _play_sweep(compose_cfg, mlflow_store, tmp_path / "multirun", WON, screen)
    full = {role: float(val[0].mean()) for role, val in WON.items()}
    report = build_report(sid, tmp_path / "report", register_model=False, bootstrap_samples=50, log_artifacts=False,
                          client=mlflow_store.client())
    p = _Cells()
    p.feed(report.html.read_text(encoding="utf-8"))
    rho = [c for c in p.cells if c.get("data-metric") == keys.CHECK_SPEARMAN_RHO]
    assert len(rho) == 1 and rho[0]["data-run"] == sid
    assert float(rho[0]["data-value"]) == sweep.data.metrics[keys.CHECK_SPEARMAN_RHO]
    n = [c for c in p.cells if c.get("data-metric") == keys.CHECK_RANK_PAIRS]
    assert len(n) == 1 and n[0]["data-run"] == sid and float(n[0]["data-value"]) == 3
    # Each pair: its full-budget run's val loss and its screening run's (or the mean of the seeds, derived).
    val = {c["data-run"]: float(c["data-value"]) for c in p.cells if c.get("data-metric") == keys.BEST_VAL_LOSS}
    for role, rid in ids.items():
        assert val[rid] == full[role]
    means = [c for c in p.cells if c.get("data-derived") == "ranking/screen/plain-plain-baseline"]
    assert len(means) == 1 and float(means[0]["data-value"]) == pytest.approx(0.61)
    pairs = json.loads(sweep.data.tags[keys.TAG_RANKING_PAIRS])
    assert all(rid in means[0]["title"] for rid in pairs[0]["screen_run_ids"])
    assert val[pairs[1]["screen_run_ids"][0]] == screen["flashy-flip-falcon"]  # a single screening run: its own metric
    assert " ".join(p.tagged[keys.TAG_RANKING_VERDICT].split()) == (
        f"Decision: {sweep.data.tags[keys.TAG_RANKING_VERDICT]}.")
    # the delivery table: every challenger's paired loss gain and its lower bound, derived from the sweep's decision
    delivery = json.loads(sweep.data.tags[keys.TAG_DELIVERY])
    gains = {c["data-derived"]: float(c["data-value"]) for c in p.cells if c.get("data-derived", "").startswith("delivery/")}
    for c in delivery["challengers"]:
        assert gains[f"delivery/{c['name']}/loss_gain"] == c["loss_gain"]
        assert gains[f"delivery/{c['name']}/loss_gain_low"] == c["loss_gain_low"]
    assert p.tagged[keys.TAG_RANKING_AGREEMENT] == sweep.data.tags[keys.TAG_RANKING_AGREEMENT] + "."
    assert any(v.get("metric") == keys.CHECK_SPEARMAN_RHO and v["run_id"] == sid for v in report.payload["values"])
    assert report.payload["ranking_verdict"] == sweep.data.tags[keys.TAG_RANKING_VERDICT]


def test_the_report_of_a_sweep_with_rho_undefined_says_why_and_shows_no_rho(compose_cfg, mlflow_store, tmp_path):
    from mfexp.report import build_report

    sid, _, sweep, _ = _play_sweep(compose_cfg, mlflow_store, tmp_path / "multirun", LOST,
                                   {"plain-plain-baseline": 0.60, "flashy-flip-falcon": 0.50})
    report = build_report(sid, tmp_path / "report", register_model=False, bootstrap_samples=50, log_artifacts=False,
                          client=mlflow_store.client())
    p = _Cells()
    p.feed(report.html.read_text(encoding="utf-8"))
    assert not [c for c in p.cells if c.get("data-metric") == keys.CHECK_SPEARMAN_RHO]
    assert p.tagged[keys.TAG_RANKING_AGREEMENT].startswith("Spearman's rho undefined: 2 policies")
    assert "the baseline is delivered: no policy beat it" in p.tagged[keys.TAG_RANKING_VERDICT]
