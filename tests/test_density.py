"""Density matching (``mfexp/density.py``, ``search=density``): probes scored with a model that is trained anyway.

* ``score`` with a hand-made model that reads stripe orientation: a transform that changes the
  label (a quarter turn of vertical stripes) is caught, one that keeps it (a flip) is not.
* ``choose``: strongest magnitude within ``keep``, the ``top`` techniques, no policy from a model
  that learned nothing.
* The sweeper's density backend end to end on the tiny demo (``@pytest.mark.slow``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import NEU_ROOT, TINY_DEMO, TINY_TRAIN, mfexp_cli
from hydra_plugins.mfexp_sweeper.density_search import DensitySearch
from hydra_plugins.mfexp_sweeper.search import Candidate, Result

from mfexp.data import ImageSet
from mfexp.density import Probe, Scores, choose, prior_loss, propose, score

ENV = {"PYTHONUNBUFFERED": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
TARGETS = {"flip": "mfexp_plugins.augment.Flip", "d4": "mfexp_plugins.augment.D4",
           "brightness_contrast": "mfexp_plugins.augment.BrightnessContrast", "mixup": "mfexp_plugins.augment.MixUp"}


class StripeReader(torch.nn.Module):
    """Class 0 = horizontal stripes (intensity changes down the image), 1 = vertical; from gradient energy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))
        return torch.stack([dy - dx, dx - dy], 1) * 20


def stripes(n: int = 64, size: int = 16) -> ImageSet:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = np.empty((n, size, size, 1), np.uint8)
    for i, y in enumerate(labels):
        period = rng.integers(3, 6)
        wave = (np.arange(size) // period % 2) * 160 + 40
        images[i, ..., 0] = wave[:, None] if y == 0 else wave[None, :]
    return ImageSet(images, labels.astype(np.int64), ("horizontal", "vertical"))


def test_a_label_changing_transform_is_caught_and_a_label_keeping_one_is_not():
    val = stripes()
    s = score(StripeReader(), val, val.labels, TARGETS, {"flip": [1.0], "d4": [1.0], "mixup": [0.5]},
              device=torch.device("cpu"), repeats=2)
    by = {p.technique: p for p in s.probes}
    assert s.clean_error == 0.0 and s.prior_loss == pytest.approx(np.log(2))
    assert by["flip"].error == 0.0 and by["flip"].retained > 0.99  # a flip keeps stripes' orientation
    assert by["d4"].error > 0.4 and by["d4"].retained < 0.2  # 4 of its 7 elements turn them a quarter
    assert s.skipped == ("mixup",)  # acts on batches: not an image probe
    c = choose(s, keep=0.8, top=3)
    assert c.policy == (("flip", 1.0),)
    assert c.rejected["d4"].startswith("breaks the data: retains")
    assert "mixup" in c.rejected


PROBE_THEN_FORK = """
import numpy as np, torch
from mfexp.data import ImageSet
from mfexp.density import score
from mfexp.loader import make_loader
from mfexp.policy import Policy
rng = np.random.default_rng(0)
val = ImageSet(rng.integers(0, 255, (128, 64, 64, 1), dtype=np.uint8), np.arange(128) % 2, ("a", "b"))
targets = {"distort": "mfexp_plugins.augment.Distort", "affine": "mfexp_plugins.augment.Affine"}
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64 * 64, 2))
score(model, val, val.labels, targets, {"distort": [1.0], "affine": [1.0]}, device=torch.device("cpu"))
policy = Policy({t: {"_target_": c, "m": 1.0, "rr": 1.0} for t, c in targets.items()})
for _ in make_loader(val, 32, train=True, pipeline=policy.image_pipeline(seed=0), num_workers=1):
    pass
print("workers done")
"""


def test_a_training_that_forks_workers_after_the_probes_does_not_hang(tmp_path):
    """The probes run OpenCV in the training process; a DataLoader worker forked after them once deadlocked."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PROBE_THEN_FORK], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, **ENV})
    assert proc.returncode == 0 and "workers done" in proc.stdout, proc.stderr[-3000:]


def _probe(t, m, retained) -> Probe:
    return Probe(t, m, 1.0 - retained, 0.0, retained)


def test_choose_keeps_the_strongest_safe_magnitude_and_the_top_techniques():
    s = Scores(0.2, 0.05, 1.0, (
        _probe("a", 0.25, 0.99), _probe("a", 0.5, 0.95), _probe("a", 1.0, 0.5),
        _probe("b", 0.5, 0.9), _probe("b", 1.0, 0.85),
        _probe("c", 0.5, 0.97),
        _probe("d", 0.25, 0.3)))
    c = choose(s, keep=0.8, top=2)
    assert c.policy == (("c", 0.5), ("a", 0.5))  # a at 0.5, not 1.0 (retains 50 %); c retains more than b
    assert c.rejected["b"].startswith("admitted (retains 85% at m=1)")
    assert c.rejected["d"] == "breaks the data: retains 30% at m=0.25 (< 80%)"
    assert "top 2" in c.reason


def test_a_model_no_better_than_the_class_prior_yields_no_policy():
    s = Scores(1.2, 0.6, 1.05, (_probe("a", 0.5, 0.9),))
    c = choose(s)
    assert c.policy == () and "not below the class-prior loss" in c.reason
    assert c.rejected["a"].startswith("not scored")


def test_prior_loss_is_the_entropy_of_the_training_frequencies_on_validation_labels():
    assert prior_loss(np.array([0, 0, 0, 1]), np.array([0, 1]), 2) == pytest.approx(-(np.log(0.75) + np.log(0.25)) / 2)


SCORES = Scores(0.2, 0.05, 1.0, (
    _probe("a", 0.25, 0.99), _probe("a", 0.5, 0.95), _probe("a", 1.0, 0.5),
    _probe("b", 0.5, 0.9), _probe("b", 1.0, 0.85),
    _probe("c", 0.5, 0.97), _probe("c", 1.0, 0.6),
    _probe("d", 0.25, 0.3)))


def test_proposals_are_the_nested_sequence_then_trivial_augment_over_what_density_admits():
    choice, props = propose(SCORES, keep=0.8, top=2, rr=0.5, kinds=("nested", "diverse", "rr", "stronger"))
    assert choice.policy == (("c", 0.5), ("a", 0.5))
    by = {p.name: p for p in props}
    assert [p.name for p in props] == ["nested-1", "nested-2", "diverse", "rr-1", "stronger"]  # priority order
    assert by["nested-1"].techniques == (("c", 0.5, 0.5),) and by["nested-1"].adds == "c"
    assert by["nested-2"].techniques == (("c", 0.5, 0.5), ("a", 0.5, 0.5)) and by["nested-2"].adds == "a"
    # every admitted technique (b too, beyond the top 2) at its admitted magnitude, one per image: trivial mode
    assert by["diverse"].mode == "trivial"
    assert by["diverse"].techniques == (("c", 0.5, 1.0), ("a", 0.5, 1.0), ("b", 1.0, 1.0))
    assert by["rr-1"].techniques == (("c", 0.5, 1.0), ("a", 0.5, 1.0))
    assert by["stronger"].techniques == (("c", 1.0, 0.5), ("a", 1.0, 0.5))  # the next probed magnitude up
    assert [p.name for p in propose(SCORES, top=1, kinds=("nested",))[1]] == ["nested-1"]
    with pytest.raises(ValueError, match="unknown proposal kind"):
        propose(SCORES, kinds=("nested", "grid"))


def test_a_model_that_learned_nothing_proposes_nothing():
    choice, props = propose(Scores(1.2, 0.6, 1.05, (_probe("a", 0.5, 0.9),)))
    assert props == [] and "not below the class-prior loss" in choice.reason


def test_density_backend_trains_the_proposals_it_can_afford_at_full_budget():
    seen: list = []

    def evaluate(cands):
        seen.extend(cands)
        return [Result(c, 0.19 - 0.01 * i, f"run-{c.name}") for i, c in enumerate(cands)]

    base = Result(Candidate((), -1), 0.2, "base")
    search = DensitySearch(["a", "b", "c", "d", "e"], keep=0.8, top=2, rr=0.5, kinds=("nested", "diverse"),
                           log=lambda m: None)
    out = search.run(SCORES.to_dict(), base, evaluate, max_candidates=2)
    assert [c.name for c in seen] == ["nested-1", "nested-2"]  # the budget cuts the lowest priority
    assert all(c.rung == -1 for c in seen)  # full budget
    assert seen[1].policy == (("c", "m", 0.5), ("c", "rr", 0.5), ("a", "m", 0.5), ("a", "rr", 0.5))
    assert out.policy == () and out.kept == ["c", "a"]  # the delivery rule, not the backend, picks what is delivered
    assert out.rejected["d"].startswith("breaks the data") and out.rejected["e"] == "not scored"
    assert [p["status"] for p in out.proposals] == ["trained", "trained", "not trained: over search.max_cost"]
    assert [p["run_id"] for p in out.proposals] == ["run-nested-1", "run-nested-2", None]
    steps = [(s.technique, s.incumbent_loss, s.best.val_loss) for s in out.stages]  # the per-technique chart's bars
    assert steps == [("c", 0.2, 0.19), ("a", 0.19, pytest.approx(0.18))]
    assert "trained at full budget: nested-1, nested-2" in out.note
    assert DensitySearch.probes(["flip", "rotate"], [0.5, 1.0], {"flip": False}) == {"flip": [1.0], "rotate": [0.5, 1.0]}


def test_the_sweepers_probe_overrides_compose_into_the_baseline_jobs_config(compose_cfg):
    from hydra_plugins.mfexp_sweeper.sweeper import PolicySweeper
    from omegaconf import OmegaConf

    sweeper = PolicySweeper()
    sweeper.s = OmegaConf.create({"backend": "density", "order": ["flip", "rotate"], "density_magnitudes": [0.5, 1.0],
                                  "density_repeats": 3})
    cfg = compose_cfg(*sweeper._probe_overrides())
    assert dict(cfg.probe.targets) == {"flip": "mfexp_plugins.augment.Flip", "rotate": "mfexp_plugins.augment.Rotate"}
    assert {k: list(v) for k, v in cfg.probe.magnitudes.items()} == {"flip": [1.0], "rotate": [0.5, 1.0]}
    assert cfg.probe.repeats == 3
    assert sweeper._policy_overrides((("flip", "m", 1.0), ("flip", "rr", 0.5))) == [
        "augment=policy", "augment.techniques.flip.m=1.0", "augment.techniques.flip.rr=0.5"]
    assert sweeper._policy_overrides((("blur", "m", 0.5), ("blur", "rr", 1.0)), mode="trivial") == [
        "augment=policy", "augment.mode=trivial", "augment.techniques.blur.m=0.5", "augment.techniques.blur.rr=1.0"]


@pytest.mark.slow
def test_a_density_sweep_scores_on_the_baseline_and_trains_no_screening_candidate(tmp_path, mlflow_store):
    """The tiny demo's one-epoch model is no better than the class prior: the sweep says so and keeps the baseline."""
    proc = mfexp_cli(["-m", "search=density", "search.order=[flip,d4,brightness_contrast]", "search.reference=false",
                      "trainer.log_model=false", f"hydra.sweep.dir={tmp_path / 'm'}",
                      *TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides], tmp_path, ENV, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    roles = {}
    for r in mlflow_store.runs():
        roles.setdefault(r.data.tags.get("mfexp.role"), []).append(r)
    assert sorted(roles) == ["baseline", "sweep"], "density matching trains no screening run"
    baseline, sweep = roles["baseline"][0], roles["sweep"][0]
    path = mlflow_store.client().download_artifacts(baseline.info.run_id, "density.json", str(tmp_path))
    scores = json.loads(open(path).read())
    assert {(p["technique"], p["m"]) for p in scores["probes"]} == {
        ("flip", 1.0), ("d4", 1.0), *(("brightness_contrast", m) for m in (0.25, 0.5, 0.75, 1.0))}
    assert baseline.data.metrics["density_probes"] == 6
    assert scores["clean_loss"] >= scores["prior_loss"]  # what this tiny training learns
    note = sweep.data.tags["mfexp.search_note"]
    assert note.startswith("density matching has nothing to go on: the baseline's val loss")
    assert f"search: {note}" in output
    assert sweep.data.tags["mfexp.kept"] == "" and sweep.data.tags["mfexp.best_role"] == "baseline"
    assert sweep.data.metrics["search.cost_multiple"] == 0.0
    assert (tmp_path / "m" / "report" / "report.html").is_file(), "the report handles a sweep without screening runs"


LEARNING_DEMO = ["data.demo_per_class.good=40", *(f"data.demo_per_class.{c}=16" for c in ("scratch", "pit", "crack", "stain")),
                 "trainer.epochs=4"]  # 144 images, 4 epochs: enough for the tiny model to learn something to keep
NEU_TINY = ["data=neu", f"data.root={NEU_ROOT}", "data.subset=0.3", "trainer.epochs=2"]  # a third of NEU's training split


def _default_sweep(tmp_path, mlflow_store, data: list[str]):
    """The default search (density proposes, full training disposes) at tiny size; returns runs by role, sweep, report."""
    tiny = [o for o in TINY_TRAIN if not o.startswith(("trainer.epochs", "trainer.batch_size"))]
    proc = mfexp_cli(["-m", "trainer.log_model=false", f"hydra.sweep.dir={tmp_path / 'm'}", *tiny,
                      "search.density_repeats=1", "search.density_magnitudes=[0.5,1.0]",  # 20 probes, one pass each
                      "trainer.batch_size=16", *data, *mlflow_store.overrides], tmp_path, ENV, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    roles: dict[str, list] = {}
    for r in mlflow_store.runs():
        roles.setdefault(r.data.tags.get("mfexp.role"), []).append(r)
    report = json.loads((tmp_path / "m" / "report" / "report.json").read_text())
    return roles, roles["sweep"][0], report, output


def _check_default_sweep(roles, sweep, report, output):
    tags, metrics = sweep.data.tags, sweep.data.metrics
    cands = roles.get("candidate", [])
    proposals = json.loads(tags["mfexp.proposals"])
    assert cands and len(cands) == sum(p["status"] == "trained" for p in proposals)
    for c in cands:  # full budget (as the baseline trains), no refit, never tested
        assert c.data.tags["mfexp.fidelity"] == "full" and c.data.params["trainer.refit"] == "False"
        assert c.data.params["trainer.epochs"] == roles["baseline"][0].data.params["trainer.epochs"]
        assert c.data.params["data.subset"] == roles["baseline"][0].data.params["data.subset"]
        assert "test_error_rate" not in c.data.metrics
    assert metrics["search.cost_multiple"] <= 1.5  # the default budget: search.max_cost
    # Delivery: the sweep's rule names one run, and that is the report's optimal run.
    delivered = tags["mfexp.delivered"]
    best = tags["mfexp.best_run_id"]
    if delivered in ("baseline", "reference"):
        assert "final" not in roles and best == roles[delivered][0].info.run_id
    else:
        final, = roles["final"]
        source = next(c for c in cands if c.data.tags["mfexp.proposal"] == delivered)
        assert best == final.info.run_id and final.data.tags["mfexp.from_candidate"] == source.info.run_id
        assert final.data.tags["mfexp.policy"] == source.data.tags["mfexp.policy"]
    assert f"  why: {tags['mfexp.ranking_verdict']}" in output
    # The report's data: every policy trained at full budget, one delivered; one bar per kept technique.
    lines = report["parallel_coordinates"]
    assert len(lines) >= 3 and {x["fidelity"] for x in lines} == {"full budget"}
    assert [x["run_id"] for x in lines if x["delivered"]] == [best]
    assert {x["label"] for x in lines} >= {"baseline", "reference", *(c.data.tags["mfexp.proposal"] for c in cands)} - {
        delivered}
    kept = [t for t in tags["mfexp.kept"].split(",") if t]
    bars = report["val_loss_by_technique"]
    assert [b["technique"] for b in bars] == kept
    losses = {r.info.run_id: r.data.metrics["best_val_loss"] for rs in roles.values() for r in rs if "best_val_loss" in r.data.metrics}
    assert bars[0]["val_loss_before"] == losses[roles["baseline"][0].info.run_id]
    for before, bar in zip(bars, bars[1:]):
        assert bar["val_loss_before"] == before["val_loss_after"]
    assert all(b["val_loss_after"] == losses[b["run_id"]] and b["fidelity"] == "full budget" for b in bars)
    assert report["density_scores"]["probes"] and report["delivery"]["rule"] == "paired"


@pytest.mark.slow
def test_the_default_sweep_trains_density_proposals_at_full_budget_and_reports_them(tmp_path, mlflow_store):
    _check_default_sweep(*_default_sweep(tmp_path, mlflow_store, LEARNING_DEMO))


@pytest.mark.slow
@pytest.mark.skipif(not NEU_ROOT.is_dir(), reason=f"NEU surface-defect data not found at {NEU_ROOT}")
def test_the_default_sweep_on_neu_reports_every_policy_and_what_each_technique_did(tmp_path, mlflow_store):
    roles, sweep, report, output = _default_sweep(tmp_path, mlflow_store, NEU_TINY)
    _check_default_sweep(roles, sweep, report, output)
    assert len(report["val_loss_by_technique"]) >= 1  # NEU's one-epoch model learns enough to keep a technique
