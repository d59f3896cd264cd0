"""The report (mfexp/report): from a tiny real sweep in a temporary MLflow store.

One sweep is built once per module with the real training (`mfexp.run.run`), laid out exactly as
the sweeper writes it (parent run, candidates with stage tags, baseline / final / reference), and
every test reads it back through MLflow. A second sweep on the same data checks the
champion/challenger rule.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pytest

import mfexp
from mfexp import tracking

PNGS = ["class_distribution", "parallel_coordinates", "val_loss_waterfall", "recall", "precision", "error_rate",
        "confusion_matrices", "inspection_curves", "mistakes_optimal", "mistakes_fixed"]
TINY = [
    "data.demo_per_class.good=24", "data.demo_per_class.scratch=8", "data.demo_per_class.pit=8",
    "data.demo_per_class.crack=8", "data.demo_per_class.stain=8",
    "data.image_size=16", "model.stem=small", "trainer.epochs=1", "trainer.batch_size=16",
    "trainer.threads=1", "trainer.num_workers=0", "trainer.progress=false",
]
AXES = "flip.rr,rotate.m,rotate.rr"
MODEL = "mfexp-classifier"


# ------------------------------------------------------------------------------ the fixture sweep
class SweepBuilder:
    """Writes a sweep the way the sweeper does, with real (tiny) trainings."""

    def __init__(self, compose_cfg, store_dir: Path):
        self.compose_cfg, self.store_dir = compose_cfg, store_dir
        tracking.setup(None, store_dir, "mfexp")
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.exp_id = self.client.get_experiment_by_name("mfexp").experiment_id

    def train(self, sweep_id: str, role: str, overrides: list[str], tags: dict[str, str] | None = None) -> str:
        import mlflow

        from mfexp.run import run

        screening = role == "candidate"
        cfg = self.compose_cfg(*TINY, f"tracking.store_dir={self.store_dir}", f"tracking.role={role}",
                               f"tracking.parent_run_id={sweep_id}", f"trainer.evaluate_test={not screening}",
                               f"trainer.log_model={not screening}", *(["data.subset=0.5"] if screening else []),
                               *overrides, *[f"++tracking.tags.{k}={v}" for k, v in (tags or {}).items()])
        run(cfg)
        return mlflow.last_active_run().info.run_id

    def sweep(self, name: str, seed: int, full: bool = True) -> str:
        c = self.client
        sid = c.create_run(self.exp_id, run_name=name, tags={tracking.TAG_ROLE: "sweep",
                                                             tracking.TAG_ENGINE: mfexp.__version__}).info.run_id
        c.log_param(sid, "search.axes", AXES)
        c.log_param(sid, "search.order", "flip,rotate")
        seed_arg = [f"trainer.seed={seed}"]
        cand = {"fidelity": "e1-s0.5"}
        s0 = self.train(sid, "candidate", seed_arg, {**cand, "stage": "0", "technique": "none"})
        flip = {rr: ["augment=policy", "augment.techniques.flip.m=1.0", f"augment.techniques.flip.rr={rr}", *seed_arg]
                for rr in (0.5, 1.0)}
        runs = {rr: self.train(sid, "candidate", ov, {**cand, "stage": "1", "technique": "flip"}) for rr, ov in flip.items()}
        loss = {rr: c.get_run(r).data.metrics["best_val_loss"] for rr, r in runs.items()}
        win = min(loss, key=loss.get)
        self.train(sid, "candidate", flip[win] + ["augment.techniques.rotate.m=0.5", "augment.techniques.rotate.rr=0.5"],
                   {**cand, "stage": "2", "technique": "rotate"})
        for r in (s0, runs[win]):
            c.set_tag(r, "mfexp.stage_winner", "true")
        tags = {"mfexp.kept": "flip", "mfexp.rejected": "rotate",
                "mfexp.rejected_reasons": json.dumps({"rotate": "gain below noise"})}
        if full:
            base = self.train(sid, "baseline", seed_arg)
            final = self.train(sid, "final", flip[win])
            ref = self.train(sid, "reference", ["augment=trivial", *seed_arg])
            ms = {r: c.get_run(r).data.metrics for r in (base, final, ref)}
            best = min(ms, key=lambda r: (ms[r]["best_val_loss"], ms[r]["test_error_rate"]))
            tags |= {"mfexp.baseline_run_id": base, "mfexp.best_run_id": best, "mfexp.reference_run_id": ref,
                     tracking.TAG_FINGERPRINT: c.get_run(base).data.tags[tracking.TAG_FINGERPRINT]}
        for k, v in tags.items():
            c.set_tag(sid, k, v)
        for k, v in {"search.candidate_epochs": 2.0, "search.candidates": 4, "search.cost_multiple": 2.0,
                     "search.wall_seconds": 42.0, "search.noise": 0.01}.items():
            c.log_metric(sid, k, v)
        c.set_terminated(sid, "FINISHED")
        return sid

    def second_sweep(self, name: str, seed: int) -> str:
        """Same data, another seed, nothing kept: the best run is its baseline."""
        c = self.client
        sid = c.create_run(self.exp_id, run_name=name, tags={tracking.TAG_ROLE: "sweep",
                                                             tracking.TAG_ENGINE: mfexp.__version__}).info.run_id
        c.log_param(sid, "search.axes", "flip.rr")
        s0 = self.train(sid, "candidate", [f"trainer.seed={seed}"], {"fidelity": "e1-s0.5", "stage": "0", "technique": "none"})
        c.set_tag(s0, "mfexp.stage_winner", "true")
        base = self.train(sid, "baseline", [f"trainer.seed={seed}"])
        for k, v in {"mfexp.kept": "", "mfexp.rejected": "flip", "mfexp.baseline_run_id": base,
                     "mfexp.best_run_id": base}.items():
            c.set_tag(sid, k, v)
        c.set_terminated(sid, "FINISHED")
        return sid


@pytest.fixture(scope="module")
def store(tmp_path_factory, request) -> Path:
    store_dir = tmp_path_factory.mktemp("report_store") / "mlruns"
    store_dir.mkdir()
    try:  # tests/conftest.py migrates one SQLite store per session; copying it saves the migrations
        shutil.copyfile(request.getfixturevalue("_migrated_db"), store_dir / "mlflow.db")
    except pytest.FixtureLookupError:
        pass
    return store_dir


def compose_cfg(*overrides: str):
    """The config `python -m mfexp OVERRIDES` would run."""
    from hydra import compose, initialize_config_dir

    from mfexp.__main__ import config_dir  # registers the structured configs

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="module")
def builder(store):
    import mlflow.models

    # MLflow infers a logged model's pip requirements by importing it in a subprocess (tens of
    # seconds on a loaded machine); the tests do not need requirements.txt, so skip the inference.
    mp = pytest.MonkeyPatch()
    mp.setattr(mlflow.models, "infer_pip_requirements", lambda *a, fallback=None, **k: list(fallback or []))
    mp.setenv("MFEXP_CACHE", os.environ.get("MFEXP_CACHE") or str(store.parent / "cache"))
    yield SweepBuilder(compose_cfg, store)
    mp.undo()


@pytest.fixture(scope="module")
def sweep_a(builder) -> str:
    return builder.sweep("sweep-a", seed=0)


@pytest.fixture(scope="module")
def report_a(sweep_a, store, tmp_path_factory):
    from mfexp.report import build_report

    out = tmp_path_factory.mktemp("report_a")
    return build_report(sweep_a, out, bootstrap_samples=500)


def _client(store: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking.default_uri(store))


class _Cells(HTMLParser):
    """Collects data-* provenance attributes and <img> sources."""

    def __init__(self):
        super().__init__()
        self.cells: list[dict] = []
        self.imgs: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-value" in a:
            self.cells.append(a)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for k in ("href", "src"):
            if k in a and not str(a[k]).startswith("data:"):
                self.links.append(a[k])


def _parse(path: Path) -> _Cells:
    p = _Cells()
    p.feed(path.read_text(encoding="utf-8"))
    return p


# ------------------------------------------------------------------------------------- outputs
def test_every_png_and_the_html_exist_are_valid_and_logged(report_a, store, sweep_a):
    from PIL import Image

    out = report_a.html.parent
    for name in PNGS:
        png = out / f"{name}.png"
        with Image.open(png) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    cells = _parse(report_a.html)
    assert len(cells.imgs) == len(PNGS)
    for src in cells.imgs:  # self-contained: every image embedded, each a valid PNG
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.verify()
    assert cells.links == []  # nothing outside the file
    text = report_a.html.read_text()
    for needle in ("Policy engine", report_a.data.best.run.policy, "Search cost", "paired bootstrap"):
        assert needle in text
    json.loads((out / "report.json").read_text())
    logged = {Path(f.path).name for f in _client(store).list_artifacts(sweep_a, "report")}
    assert logged == {"report.html", "report.json", *(f"{n}.png" for n in PNGS)}
    assert _client(store).get_run(sweep_a).data.tags["mfexp.report"] == "report/report.html"


def test_every_number_equals_its_mlflow_metric(report_a, store):
    c = _client(store)
    cells = _parse(report_a.html).cells
    metrics: dict[str, dict] = {}
    shown = set()
    for cell in cells:
        if "data-metric" in cell:
            run_id, key = cell["data-run"], cell["data-metric"]
            metrics.setdefault(run_id, c.get_run(run_id).data.metrics)
            assert float(cell["data-value"]) == metrics[run_id][key], (run_id, key)
            shown.add((run_id, key))
    d = report_a.data
    base, best = d.baseline.run.run_id, d.best.run.run_id
    for run_id in (base, best):
        assert (run_id, "test_error_rate") in shown
        for cls in d.classes:
            assert (run_id, f"test_recall/{cls}") in shown and (run_id, f"test_precision/{cls}") in shown
    mb, mo = c.get_run(base).data.metrics, c.get_run(best).data.metrics
    derived = {cell["data-derived"]: float(cell["data-value"]) for cell in cells if "data-derived" in cell}
    assert derived["error_reduction"] == mb["test_error_rate"] - mo["test_error_rate"]
    for cls in d.classes:
        for m in ("recall", "precision"):
            assert derived[f"delta/test_{m}/{cls}"] == mo[f"test_{m}/{cls}"] - mb[f"test_{m}/{cls}"]
    # The machine-readable copy says the same.
    payload = json.loads(report_a.html.parent.joinpath("report.json").read_text())
    for v in payload["values"]:
        if "metric" in v:
            assert v["value"] == metrics.get(v["run_id"], c.get_run(v["run_id"]).data.metrics)[v["metric"]]


def test_logged_metrics_equal_a_sklearn_recomputation_from_the_logged_predictions(report_a, store, tmp_path):
    import mlflow.artifacts
    import pandas as pd
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    c = _client(store)
    for role, ev in report_a.data.full.items():
        csv = mlflow.artifacts.download_artifacts(run_id=ev.run.run_id, artifact_path="test_predictions.csv",
                                                  dst_path=str(tmp_path / role), tracking_uri=c.tracking_uri)
        df = pd.read_csv(csv)
        y, yp = df["y_true"].to_numpy(), df["y_pred"].to_numpy()
        classes = [col[len("prob/"):] for col in df.columns if col.startswith("prob/")]
        m = c.get_run(ev.run.run_id).data.metrics
        assert m["test_error_rate"] == pytest.approx(1 - accuracy_score(y, yp), abs=1e-12)
        p, r, _, s = precision_recall_fscore_support(y, yp, labels=range(len(classes)), zero_division=0)
        for i, cls in enumerate(classes):
            assert m[f"test_recall/{cls}"] == pytest.approx(r[i], abs=1e-12)
            assert m[f"test_precision/{cls}"] == pytest.approx(p[i], abs=1e-12)
            assert m[f"test_support/{cls}"] == s[i]
        assert np.array_equal(yp, ev.y_pred) and np.array_equal(y, ev.y_true)
    assert report_a.data.notes == [n for n in report_a.data.notes if "differ from a recomputation" not in n]


def test_best_run_rule_and_waterfall_follow_mlflow(report_a, store, sweep_a):
    c = _client(store)
    d = report_a.data
    full = {r: c.get_run(ev.run.run_id).data.metrics for r, ev in d.full.items()}
    assert set(full) == {"baseline", "final", "reference"}
    expected = min(full, key=lambda r: (full[r]["best_val_loss"], full[r]["test_error_rate"]))
    assert d.best_role == expected and report_a.payload["best_run_id"] == d.full[expected].run.run_id
    assert d.axes == AXES.split(",") and d.kept == ["flip"] and d.rejected == ["rotate"]
    # Waterfall: stage-0 screening baseline -> flip's stage winner; rotate (rejected) adds no bar.
    assert d.screen_start.stage == 0 and [s.technique for s in d.steps] == ["flip"]
    winner = c.get_run(d.steps[0].run_id)
    assert winner.data.tags["mfexp.stage_winner"] == "true" and winner.data.tags["mfexp.stage"] == "1"
    assert d.steps[0].before == c.get_run(d.screen_start.run_id).data.metrics["best_val_loss"]
    assert d.steps[0].after == winner.data.metrics["best_val_loss"]
    assert len(d.candidates) == 4
    # the optimal policy table lists the best run's techniques with their (m) / (rr) settings
    text = report_a.html.read_text()
    for tech in d.best.settings(d.axes):
        assert f"<td>{tech}</td>" in text


# ------------------------------------------------------------------------------------ inspection
INSPECTION = ("test_escape_rate", "test_false_reject_rate", "defect_threshold", "test_escape_rate_at_threshold",
              "test_false_reject_rate_at_threshold", "test_defect_auroc", "test_defect_average_precision")


def test_inspection_section_shows_both_runs_rates_from_mlflow(report_a):
    """Section 7 (issue 18): every inspection metric of baseline and optimal, each cell its MLflow metric (the
    provenance test above checks the values), intervals that hold the point estimates, the curves chart."""
    d, text = report_a.data, report_a.html.read_text()
    assert "7. Inspection: escapes and false rejects" in text and "8. Mistakes" in text and "9. Model registry" in text
    shown = {(c["data-run"], c["data-metric"]) for c in _parse(report_a.html).cells if "data-metric" in c}
    for ev in (d.baseline, d.best):
        assert {(ev.run.run_id, k) for k in INSPECTION} <= shown
    intervals = report_a.payload["inspection"]["intervals"]
    for role, ev in (("baseline", d.baseline), ("optimal", d.best)):
        for kind, suffix in (("argmax", ""), ("threshold", "_at_threshold")):
            for rate in ("escape_rate", "false_reject_rate"):
                i = intervals[f"{role}/{kind}/{rate}"]
                assert i["low"] <= ev.metric(f"test_{rate}{suffix}") <= i["high"], (role, kind, rate)
    good = d.classes.index("good")
    assert report_a.payload["inspection"]["defective"] == int((d.baseline.y_true != good).sum())


def test_gallery_counts_come_from_the_predictions(report_a):
    d = report_a.data
    y, b_wrong, o_wrong = d.baseline.y_true, d.baseline.y_pred != d.baseline.y_true, d.best.y_pred != d.best.y_true
    assert report_a.payload["gallery"] == {"optimal_wrong": int(o_wrong.sum()), "baseline_wrong": int(b_wrong.sum()),
                                           "fixed": int((b_wrong & ~o_wrong).sum()), "new": int((o_wrong & ~b_wrong).sum())}
    assert f"gets {int(o_wrong.sum())} of {len(y)} test images wrong" in report_a.html.read_text()


def test_gallery_marks_what_the_other_model_answered():
    """The optimal model's mistakes say NEW exactly where the baseline was right; the fixed picture holds exactly
    the baseline's pictured mistakes that the optimal model gets right."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    from mfexp import gallery
    from mfexp.report.gallery import fixed_figure, optimal_figure

    classes = ["good", "crack", "pit"]
    y = np.array([0, 0, 1, 1, 2, 2])
    base_pred, best_pred = np.array([0, 1, 0, 1, 1, 2]), np.array([1, 0, 0, 1, 2, 0])  # 3 wrong each, 1 shared
    def ev(pred):  # what the figures read of an Evaluated run
        return SimpleNamespace(y_true=y, y_pred=pred, dataset={"good_class": "good"}, run=SimpleNamespace(policy="p"))

    def titles(fig):
        return [ax.get_title() for ax in fig.axes if ax.get_title()]

    data = SimpleNamespace(classes=classes, best_role="final", baseline=ev(base_pred), best=ev(best_pred))
    thumbs = np.zeros((6, 16, 16, 1), np.uint8)
    opt = gallery.find_mistakes(y, np.eye(3)[best_pred] * 0.8 + 0.2 / 3, 0, 10)  # rows 0, 2, 5
    fig = optimal_figure(data, opt, thumbs[:len(opt)])
    assert {int(i): t.endswith("NEW: baseline right") for i, t in zip(opt.index, titles(fig))} == {2: False, 5: True, 0: True}
    plt.close(fig)
    base = gallery.find_mistakes(y, np.eye(3)[base_pred] * 0.8 + 0.2 / 3, 0, 10)  # rows 2, 1, 4: optimal fixed 1 and 4
    fig = fixed_figure(data, base, thumbs[:len(base)])
    assert sorted(titles(fig)) == ["good → crack\n87%\nnow: good", "pit → crack\n87%\nnow: pit"]
    assert "2 pictured of 2" in fig._suptitle.get_text()
    plt.close(fig)


def test_inspection_intervals_are_paired_and_match_their_definition():
    from mfexp.report.inspection import paired_rates

    rng = np.random.default_rng(2)
    d = rng.random(400) < 0.3  # 30 % defective
    a = np.where(d, rng.random(400) < 0.8, rng.random(400) < 0.10)  # flags: 20 % escapes, 10 % false rejects
    b = np.where(d, rng.random(400) < 0.95, rng.random(400) < 0.05)
    ci = paired_rates(d, {"a": a, "b": b}, [("a", "b")], samples=1000, seed=3, level=0.95)
    esc = (d & ~b).sum() / d.sum() - (d & ~a).sum() / d.sum()
    assert ci["b-a/escape_rate"].low < esc < ci["b-a/escape_rate"].high < 0  # fewer escapes, shown to be real
    assert paired_rates(d, {"a": a, "b": b}, [("a", "b")], samples=1000, seed=3, level=0.95) == ci  # seeded
    same = paired_rates(d, {"a": a, "b": a}, [("a", "b")], samples=200, seed=0, level=0.95)
    assert same["b-a/false_reject_rate"].low == same["b-a/false_reject_rate"].high == 0.0  # paired: no spread
    rng2, naive = np.random.default_rng(5), []  # index draws and the rate by its definition
    for _ in range(400):
        i = rng2.integers(0, 400, 400)
        naive.append((~d[i] & a[i]).sum() / (~d[i]).sum())
    lo, hi = np.percentile(naive, [2.5, 97.5])
    assert abs(ci["a/false_reject_rate"].low - lo) < 0.02 and abs(ci["a/false_reject_rate"].high - hi) < 0.02


# ------------------------------------------------------------------------------------- bootstrap
def test_paired_bootstrap_is_paired_and_matches_its_definition():
    from mfexp.report.stats import paired_bootstrap

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    same = paired_bootstrap(y, y, y, ["a", "b", "c"], samples=300)
    assert same.error_reduction.low == same.error_reduction.high == 0.0 and same.p_not_better == 1.0
    a = np.where(rng.random(300) < 0.3, (y + 1) % 3, y)  # 30 % wrong
    b = np.where(rng.random(300) < 0.1, (y + 1) % 3, y)  # 10 % wrong
    boot = paired_bootstrap(y, a, b, ["a", "b", "c"], samples=1000, seed=3)
    gain = (a != y).mean() - (b != y).mean()
    assert boot.error_reduction.low < gain < boot.error_reduction.high and boot.error_reduction.low > 0
    assert boot.relative_reduction.low > 0 and boot.p_not_better < 0.01
    assert paired_bootstrap(y, a, b, ["a", "b", "c"], samples=1000, seed=3) == boot  # seeded
    # Pairing: the interval of the difference is narrower than unpaired intervals would allow.
    assert boot.error_reduction.high - boot.error_reduction.low < (boot.error_baseline.high - boot.error_baseline.low) + \
        (boot.error_best.high - boot.error_best.low)
    # A naive resampling loop (index draws, recall by its definition) agrees with the vectorised one.
    rng2 = np.random.default_rng(5)
    deltas = []
    for _ in range(400):
        i = rng2.integers(0, 300, 300)
        pos = y[i] == 0
        deltas.append((b[i][pos] == 0).mean() - (a[i][pos] == 0).mean())
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    assert abs(boot.recall_delta["a"].low - lo) < 0.05 and abs(boot.recall_delta["a"].high - hi) < 0.05


# -------------------------------------------------------------------------------------- registry
def test_champion_rule_decisions():
    from mfexp.report.registry import Incumbent, decide

    inc = Incumbent("3", "r", 0.20, "fp")
    assert decide(0.10, "fp", None)[0] == "champion"
    assert decide(0.10, "fp", inc)[0] == "champion"
    alias, why = decide(0.20, "fp", inc)
    assert alias == "challenger" and "tie keeps the champion" in why
    assert decide(0.30, "fp", inc)[0] == "challenger"
    alias, why = decide(0.01, "other", inc)
    assert alias == "challenger" and "other data" in why and "not comparable" in why
    assert decide(0.50, "other", inc, on_new_data="champion")[0] == "champion"
    assert decide(0.01, "fp", Incumbent("3", "r", None, "fp"))[0] == "challenger"


def test_champion_then_challenger_or_champion_over_two_sweeps(report_a, builder, store, tmp_path):
    from mfexp.report import build_report

    c = _client(store)
    reg_a = report_a.registration
    assert reg_a.registered and reg_a.alias == "champion" and reg_a.incumbent is None
    mv = c.get_model_version_by_alias(MODEL, "champion")
    assert mv.run_id == report_a.data.best.run.run_id and str(mv.version) == reg_a.version
    err_a = c.get_run(mv.run_id).data.metrics["test_error_rate"]

    sweep_b = builder.second_sweep("sweep-b", seed=1)
    rep_b = build_report(sweep_b, tmp_path / "b", bootstrap_samples=200)
    err_b = rep_b.data.best.metric("test_error_rate")
    assert rep_b.data.best_role == "baseline"  # nothing kept: the best run is the baseline, said so
    assert any("the baseline is what this sweep delivers" in n for n in rep_b.data.notes)
    reg_b = rep_b.registration
    assert reg_b.incumbent.version == reg_a.version and reg_b.version != reg_a.version
    if err_b < err_a:
        assert reg_b.alias == "champion" and str(c.get_model_version_by_alias(MODEL, "champion").version) == reg_b.version
    else:
        assert reg_b.alias == "challenger"
        assert str(c.get_model_version_by_alias(MODEL, "champion").version) == reg_a.version
        assert str(c.get_model_version_by_alias(MODEL, "challenger").version) == reg_b.version
        assert "does not beat champion" in reg_b.reason and reg_b.reason in rep_b.html.read_text()

    # Reporting sweep A again reuses its model version instead of registering a new one.
    n_versions = len(c.search_model_versions(f"name = '{MODEL}'"))
    again = build_report(report_a.data.sweep.run_id, tmp_path / "a2", bootstrap_samples=200, log_artifacts=False)
    assert again.registration.version == reg_a.version
    assert len(c.search_model_versions(f"name = '{MODEL}'")) == n_versions


def test_the_champion_loads_and_predicts_probabilities(report_a, store):
    import mlflow.pyfunc

    mlflow.set_tracking_uri(tracking.default_uri(store))
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    ds = report_a.data.baseline.dataset
    x = np.random.default_rng(0).random((3, ds["channels"], ds["image_size"], ds["image_size"]), dtype=np.float32)
    prob = np.asarray(model.predict(x))
    assert prob.shape == (3, len(report_a.data.classes))
    assert np.allclose(prob.sum(1), 1.0, atol=1e-5) and (prob >= 0).all()


# -------------------------------------------------------------------------------------- browser
CHECK = """<script>
window.__errs = [];
addEventListener('error', function (e) { __errs.push('error:' + ((e.target && e.target.tagName) || e.message)); }, true);
var __ce = console.error; console.error = function () { __errs.push('console:' + [].join.call(arguments, ' ')); __ce.apply(console, arguments); };
addEventListener('load', function () {
  var imgs = [].slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var d = document.createElement('div'); d.id = 'mfexp-check';
  d.textContent = 'IMAGES=' + imgs.length + ' BAD=' + bad.length + ' ERRORS=' + __errs.length + ' ' + __errs.join('|');
  document.body.appendChild(d);
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(report_a, tmp_path):
    page = report_a.html.read_text(encoding="utf-8").replace("<head>", "<head>" + CHECK, 1)
    probe = tmp_path / "probe.html"
    probe.write_text(page, encoding="utf-8")
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", probe.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'id="mfexp-check">IMAGES=(\d+) BAD=(\d+) ERRORS=(\d+)([^<]*)<', done.stdout)
    assert found, f"no marker in the DOM (rc {done.returncode}): {done.stderr[-2000:]}"
    images, bad, errors, detail = int(found[1]), int(found[2]), int(found[3]), found[4]
    assert (images, bad, errors) == (len(PNGS), 0, 0), detail


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def broken(builder) -> dict[str, str]:
    """Sweeps the report must refuse, in their own experiment: no candidate; a candidate but no baseline."""
    c = builder.client
    exp = c.create_experiment("broken", artifact_location=(builder.store_dir / "artifacts").as_uri())
    empty = c.create_run(exp, tags={tracking.TAG_ROLE: "sweep"}).info.run_id
    no_base = c.create_run(exp, tags={tracking.TAG_ROLE: "sweep"}).info.run_id
    cand = c.create_run(exp, tags={tracking.TAG_ROLE: "candidate", "mlflow.parentRunId": no_base, "mfexp.stage": "0",
                                   "mfexp.stage_winner": "true"}).info.run_id
    c.log_metric(cand, "best_val_loss", 1.0)
    c.set_terminated(cand, "FINISHED")
    not_sweep = c.create_run(exp, tags={tracking.TAG_ROLE: "baseline"}).info.run_id
    return {"empty": empty, "no_base": no_base, "not_sweep": not_sweep}


@pytest.mark.parametrize("case, args, message", [
    ("unknown", ["--sweep-id", "0123456789abcdef0123456789abcdef"], "does not exist"),
    ("empty", None, "has no finished candidate run"),
    ("no_base", None, "has no finished baseline run"),
    ("not_sweep", None, "is not a sweep run"),
    ("experiment", ["--experiment", "nope"], "experiment 'nope' does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(case, args, message, broken, sweep_a, store, tmp_path, capsys):
    from mfexp.report.__main__ import main

    args = args or ["--sweep-id", broken[case]]
    rc = main([*args, "--tracking-uri", tracking.default_uri(store), "--out", str(tmp_path), "--no-register"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("mfexp: error: ") and message in err[0], err


def test_cli_reports_the_latest_sweep_by_default(report_a, store, tmp_path):
    """`python -m mfexp.report` in a folder holding mlruns/: latest sweep, default store, exit 0."""
    shutil.copytree(store, tmp_path / "mlruns", dirs_exist_ok=True)
    # The copied store's experiment still points at the original artifact folder: fine, it is absolute.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-m", "mfexp.report", "--no-register", "--no-log", "--bootstrap", "200"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    html = Path(done.stdout.strip().splitlines()[-1])
    c = _client(tmp_path / "mlruns")
    latest = c.search_runs([c.get_experiment_by_name("mfexp").experiment_id], "tags.`mfexp.role` = 'sweep'",
                           order_by=["attributes.start_time DESC"], max_results=1)[0].info.run_id
    assert html == Path("outputs/report") / latest / "report.html" and (tmp_path / html).is_file()


def test_cli_without_a_store_says_so(tmp_path, monkeypatch, capsys):
    from mfexp.report.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["--sweep-id", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mfexp: error: no MLflow store at") and "\n" not in err
    assert not (tmp_path / "mlruns").exists()  # it does not create an empty store either
