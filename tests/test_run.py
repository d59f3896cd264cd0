"""Tracked runs end to end, in-process (issue 2): tiny trainings against a real SQLite MLflow store.

Each run is composed exactly as ``python -m mfexp OVERRIDES`` would compose it (``hydra.compose``)
and executed by ``mfexp.run.run``; the CLI contract itself (exit codes, stderr) is in test_cli.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import NEU_ROOT, TINY_DEMO, TINY_TRAIN, patch_fit
from omegaconf import OmegaConf
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_recall_fscore_support

from mfexp import tracking
from mfexp.errors import ConfigError, DataError
from mfexp.job import load_data
from mfexp.run import run

PER_EPOCH = ("train_loss", "val_loss", "val_accuracy")


def _download(client, run_id: str, path: str, dst: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(dst)))


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, mlflow_store_factory, compose_cfg):
    """One tiny demo run with every artifact, the model included (2 epochs, 16 px)."""
    tmp = tmp_path_factory.mktemp("tracked")
    store = mlflow_store_factory(tmp / "mlruns")
    cfg = compose_cfg(*TINY_DEMO, *TINY_TRAIN, *store.overrides, "trainer.epochs=2", "trainer.log_model=true")
    threads = torch.get_num_threads()
    try:
        objective = run(cfg)
        threads_in_run = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    (r,) = store.runs()
    return SimpleNamespace(cfg=cfg, store=store, client=store.client(), run=r, run_id=r.info.run_id, tmp=tmp,
                           objective=objective, splits=load_data(cfg.data), threads_in_run=threads_in_run)


# ---------------------------------------------------------------------------- the tracked run
def test_run_finished_with_role_and_fingerprint_tags(tracked):
    info, tags = tracked.run.info, tracked.run.data.tags
    assert info.status == "FINISHED" and info.end_time is not None
    assert tags[tracking.TAG_ROLE] == "baseline"
    assert tags[tracking.TAG_FINGERPRINT] == tracked.splits.fingerprint and len(tracked.splits.fingerprint) == 16
    assert tags[tracking.TAG_POLICY] == info.run_name  # the policy's three-word name
    exp = tracked.client.get_experiment(info.experiment_id)
    assert exp.name == "mfexp" and exp.artifact_location == (tracked.store.store_dir / "artifacts").as_uri()


def test_params_are_the_resolved_config_flat_and_dotted(tracked):
    params = tracked.run.data.params
    flat = tracking.flatten(OmegaConf.to_container(tracked.cfg, resolve=True))
    assert {k: str(v) for k, v in flat.items()} == {k: params[k] for k in flat}
    assert params["trainer.epochs"] == "2" and params["data.demo_per_class.good"] == "24"
    assert params["model.name"] == "resnet18" and params["trainer.device"] == "auto"
    assert params["tracking.store_dir"] == str(tracked.store.store_dir)


def test_per_epoch_metrics_and_objective(tracked):
    for key in PER_EPOCH:
        hist = _history(tracked.client, tracked.run_id, key)
        assert [s for s, _ in hist] == [1, 2], key  # step = epoch, from 1
        assert all(np.isfinite(v) for _, v in hist)
    val = [v for _, v in _history(tracked.client, tracked.run_id, "val_loss")]
    m = tracked.run.data.metrics
    # trainer.checkpoint=last (the default): the objective is the kept (last) epoch's validation loss
    assert tracked.objective == pytest.approx(val[-1]) == pytest.approx(m["best_val_loss"])
    assert m["epochs_run"] == 2 and m["best_epoch"] == 2
    assert all(0 <= v <= 1 for _, v in _history(tracked.client, tracked.run_id, "val_accuracy"))
    assert tracked.threads_in_run == 1  # trainer.threads


def test_test_metrics_equal_sklearn_on_logged_predictions(tracked):
    csv = _download(tracked.client, tracked.run_id, "test_predictions.csv", tracked.tmp)
    df = pd.read_csv(csv)
    classes = list(tracked.splits.classes)
    assert list(df.columns) == ["path", "y_true", "y_pred", *(f"prob/{c}" for c in classes)]
    assert list(df["path"]) == list(tracked.splits.test.paths)  # each row's file, relative to the data folder
    y, prob = df["y_true"].to_numpy(), df[[f"prob/{c}" for c in classes]].to_numpy()
    assert np.array_equal(y, tracked.splits.test.labels)  # every test image, in order
    assert np.array_equal(df["y_pred"].to_numpy(), prob.argmax(1))
    pred, labels = prob.argmax(1), list(range(len(classes)))
    p, r, _, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    expected = {
        "test_loss": log_loss(y, prob / prob.sum(1, keepdims=True), labels=labels),
        "test_accuracy": accuracy_score(y, pred),
        "test_error_rate": 1 - accuracy_score(y, pred),
        "test_macro_f1": f1_score(y, pred, labels=labels, average="macro", zero_division=0),
    }
    for i, c in enumerate(classes):
        expected |= {f"test_precision/{c}": p[i], f"test_recall/{c}": r[i], f"test_support/{c}": s[i]}
    logged = {k: v for k, v in tracked.run.data.metrics.items() if k.startswith("test_")}
    inspection = {k for k in logged if "escape" in k or "reject" in k or "defect" in k}  # test_inspection_... below
    assert logged.keys() - inspection == expected.keys()
    for k, v in expected.items():
        assert logged[k] == pytest.approx(float(v), abs=1e-6), k
    assert {c: logged[f"test_support/{c}"] for c in classes} == tracked.splits.test.counts()


def test_artifacts_confusion_matrix_config_and_dataset(tracked):
    names = {a.path for a in tracked.client.list_artifacts(tracked.run_id)}
    assert {"confusion_matrix.png", "config.yaml", "test_predictions.csv", "dataset.json", "policy.json"} <= names
    with Image.open(_download(tracked.client, tracked.run_id, "confusion_matrix.png", tracked.tmp)) as im:
        assert im.format == "PNG" and min(im.size) > 100
    logged_cfg = OmegaConf.load(_download(tracked.client, tracked.run_id, "config.yaml", tracked.tmp))
    assert OmegaConf.to_container(logged_cfg) == OmegaConf.to_container(tracked.cfg, resolve=True)
    ds = json.loads(_download(tracked.client, tracked.run_id, "dataset.json", tracked.tmp).read_text())
    assert ds["fingerprint"] == tracked.splits.fingerprint and ds["classes"] == list(tracked.splits.classes)
    assert ds["channels"] == 1 and ds["good_class"] == "good"
    assert ds["counts"]["test"] == tracked.splits.test.counts()


def test_logged_model_loads_and_predicts(tracked):
    mlflow.set_tracking_uri(tracked.store.uri)
    model = mlflow.pyfunc.load_model(f"runs:/{tracked.run_id}/model")
    test = tracked.splits.test
    x = test.images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # raw [0, 1] pixels, NCHW
    prob = np.asarray(model.predict(x))
    assert prob.shape == (len(test), len(test.classes))
    np.testing.assert_allclose(prob.sum(1), 1.0, atol=1e-5)  # class probabilities
    df = pd.read_csv(_download(tracked.client, tracked.run_id, "test_predictions.csv", tracked.tmp / "p"))
    np.testing.assert_allclose(prob, df[[f"prob/{c}" for c in test.classes]].to_numpy(), atol=1e-4)  # the best epoch's weights
    spec = model.metadata.get_input_schema().inputs[0]
    assert tuple(spec.shape) == (-1, 1, 16, 16) and spec.type == np.dtype("float32")
    assert tuple(model.metadata.get_output_schema().inputs[0].shape) == (-1, len(test.classes))
    example = model.metadata.load_input_example(model.metadata.get_model_info().model_uri)
    assert np.asarray(example).shape == (2, 1, 16, 16)


def test_inspection_metrics_threshold_and_gallery_are_logged(tracked):
    """Issue 18: the threshold comes from the first fit's validation predictions; the test rates, the model's
    metadata and the gallery agree with the logged predictions."""
    from mfexp import gallery, inspection

    m, classes, test = tracked.run.data.metrics, list(tracked.splits.classes), tracked.splits.test
    val = pd.read_csv(_download(tracked.client, tracked.run_id, "val_predictions.csv", tracked.tmp / "v"))
    df = pd.read_csv(_download(tracked.client, tracked.run_id, "test_predictions.csv", tracked.tmp / "t"))
    cols = [f"prob/{c}" for c in classes]
    good = classes.index("good")
    threshold, val_metrics = inspection.validation_threshold(val["y_true"].to_numpy(), val[cols].to_numpy(), good,
                                                             tracked.cfg.inspection.target_escape_rate)
    assert m["defect_threshold"] == threshold and threshold is not None
    assert {k: m[k] for k in val_metrics} == pytest.approx(val_metrics, abs=1e-12)
    y, prob = df["y_true"].to_numpy(), df[cols].to_numpy()
    expected = inspection.inspection_metrics(y, prob, good, threshold)
    assert {"test_escape_rate", "test_false_reject_rate", "test_escape_rate_at_threshold",
            "test_false_reject_rate_at_threshold", "test_defect_auroc"} <= expected.keys()
    assert {k: m[k] for k in expected} == pytest.approx(expected, abs=1e-9)

    mlflow.set_tracking_uri(tracked.store.uri)
    meta = mlflow.pyfunc.load_model(f"runs:/{tracked.run_id}/model").metadata.metadata
    assert meta["defect_threshold"] == threshold and meta["good_class"] == "good"

    names = {a.path for a in tracked.client.list_artifacts(tracked.run_id)}
    assert {"mistakes.png", "mistakes.npz"} <= names
    mistakes, thumbs = gallery.load(_download(tracked.client, tracked.run_id, "mistakes.npz", tracked.tmp / "g"))
    wrong = np.flatnonzero(df["y_pred"].to_numpy() != y)
    assert set(mistakes.index.tolist()) <= set(wrong.tolist())
    assert mistakes.total == len(wrong) and len(mistakes) == min(len(wrong), tracked.cfg.inspection.gallery_size)
    assert np.array_equal(mistakes.index, gallery.find_mistakes(y, prob, good, 10**6).index[:len(mistakes)])
    assert np.array_equal(thumbs, test.images[mistakes.index])  # the pictures are the test images (16 px: unscaled)
    assert np.array_equal(mistakes.y_pred, df["y_pred"].to_numpy()[mistakes.index])


# ---------------------------------------------------------------------------- determinism
# Augmentation runs in-process here (num_workers=0): a forked DataLoader worker inside a long
# pytest process full of other tests' threads is a deadlock risk; the worker seeding is the same code.
DETERMINISM = [*TINY_DEMO, *TINY_TRAIN, "trainer.epochs=2",
               "augment=policy", "augment.techniques.rotate.m=0.5", "augment.techniques.rotate.rr=0.5",
               "augment.techniques.mixup.m=0.5", "augment.techniques.mixup.rr=0.5"]


def _all_metrics(client, run_id: str) -> dict:
    r = client.get_run(run_id)
    return {k: _history(client, run_id, k) for k in r.data.metrics if k not in ("train_seconds", "train_images_per_second", "refit_seconds")}


def test_same_config_same_metrics(mlflow_store, compose_cfg):
    cfg = compose_cfg(*DETERMINISM, *mlflow_store.overrides)
    assert run(cfg) == run(cfg)
    other_seed = compose_cfg(*DETERMINISM, *mlflow_store.overrides, "trainer.seed=1")
    run(other_seed)
    a, b, c = (r.info.run_id for r in mlflow_store.runs())
    client = mlflow_store.client()
    ma, mb, mc = (_all_metrics(client, i) for i in (a, b, c))
    assert ma == mb and len(ma) > 20
    assert ma["train_loss"] != mc["train_loss"]  # the seed matters, so the equality above is not vacuous


# ---------------------------------------------------------------------------- failures
def _crashing_fit(exc: BaseException):
    def fake_fit(model, train_loader, val_loader, policy, num_classes, t, device, channels_last, on_epoch=None):
        on_epoch(0, {"train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5})
        raise exc

    return fake_fit


@pytest.mark.parametrize("exc, status", [(RuntimeError("boom in epoch 2"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_crash_during_training_ends_the_run(mlflow_store, compose_cfg, monkeypatch, exc, status):
    patch_fit(monkeypatch, _crashing_fit(exc))
    with pytest.raises(type(exc)):
        run(compose_cfg(*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides))
    (r,) = mlflow_store.runs()
    assert r.info.status == status and r.info.end_time is not None
    assert r.data.metrics["val_loss"] == 1.0  # what was logged before the crash stays
    assert mlflow.active_run() is None


@pytest.mark.parametrize("override, error", [("model.name=resnet_nonexistent", ConfigError), ("trainer.epochs=0", ConfigError),
                                             ("data.image_size=4", ConfigError)])
def test_bad_input_fails_before_any_run_or_training(mlflow_store, compose_cfg, monkeypatch, override, error):
    patch_fit(monkeypatch, _crashing_fit(AssertionError("training started")))
    with pytest.raises(error):
        run(compose_cfg(*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides, override))
    assert mlflow_store.runs() == []


# ---------------------------------------------------------------------------- folder data
def _rgb_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 3)):
        for ci, cls in enumerate(("dent", "ok", "rust")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                px = rng.integers(0, 80, (24, 30, 3)) + np.array([60 * ci, 40, 120 - 50 * ci])
                Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(d / f"{i}.jpg" if i % 2 else d / f"{i}.png")
    return root


def test_folder_data_rgb_run(tmp_path, mlflow_store, compose_cfg):
    root = _rgb_tree(tmp_path / "images")
    cfg = compose_cfg("data=folder", f"data.root={root}", "data.good_class=ok", *TINY_TRAIN, *mlflow_store.overrides)
    assert np.isfinite(run(cfg))
    (r,) = mlflow_store.runs()
    ds = json.loads(_download(mlflow_store.client(), r.info.run_id, "dataset.json", tmp_path).read_text())
    assert ds["channels"] == 3 and ds["classes"] == ["dent", "ok", "rust"] and ds["good_class"] == "ok"
    assert ds["counts"]["test"] == {"dent": 3, "ok": 3, "rust": 3}
    assert {k: v for k, v in r.data.metrics.items() if k.startswith("test_support/")} == \
        {"test_support/dent": 3, "test_support/ok": 3, "test_support/rust": 3}


def test_folder_data_errors_name_the_fault(tmp_path, mlflow_store, compose_cfg):
    root = _rgb_tree(tmp_path / "images")
    bad = root / "train" / "ok" / "3.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=f"{bad}: unreadable or corrupt image"):
        run(compose_cfg("data=folder", f"data.root={root}", *TINY_TRAIN, *mlflow_store.overrides))
    assert mlflow_store.runs() == []


@pytest.mark.skipif(not NEU_ROOT.is_dir(), reason=f"NEU surface-defect data not found at {NEU_ROOT}")
def test_real_images_neu(mlflow_store, compose_cfg):
    """The NEU set read in place: 6 grayscale classes with a test/ folder of 60 images each."""
    cfg = compose_cfg("data=neu", f"data.root={NEU_ROOT}", "data.subset=0.1", *TINY_TRAIN, *mlflow_store.overrides)
    assert np.isfinite(run(cfg))
    (r,) = mlflow_store.runs()
    assert r.info.status == "FINISHED"
    support = {k.split("/", 1)[1]: v for k, v in r.data.metrics.items() if k.startswith("test_support/")}
    assert support == {c: 60 for c in ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")}
    assert r.data.params["data.root"] == str(NEU_ROOT) and len(r.data.tags[tracking.TAG_FINGERPRINT]) == 16


# ---------------------------------------------------------------------------- refit from another run's fit
def test_refit_from_a_fit_gives_the_model_a_full_run_gives_and_keeps_the_fits_validation(compose_cfg, mlflow_store):
    """A sweep delivers a candidate it fitted without refit: trainer.refit_from skips the fit, trains the refit only."""
    policy = ["augment=policy", "augment.techniques.flip.m=1.0", "augment.techniques.flip.rr=0.5", "trainer.epochs=2"]
    base = [*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides, *policy]
    client = mlflow_store.client()
    run(compose_cfg(*base, "trainer.refit=false", "trainer.evaluate_test=false", "tracking.role=candidate"))
    run(compose_cfg(*base))  # the same policy as one full run: fit, then refit
    fit_id, full_id = (r.info.run_id for r in mlflow_store.runs())
    objective = run(compose_cfg(*base, f"trainer.refit_from={fit_id}", "tracking.role=final"))
    refit = mlflow_store.runs()[-1]
    src, full = client.get_run(fit_id).data, client.get_run(full_id).data
    m = refit.data.metrics
    assert refit.data.tags["mfexp.from_candidate"] == fit_id and objective == src.metrics["best_val_loss"]
    assert {k: m[k] for k in ("best_val_loss", "best_epoch", "epochs_run")} == {
        k: src.metrics[k] for k in ("best_val_loss", "best_epoch", "epochs_run")}
    assert m["refit_epochs"] == 2 and "train_seconds" not in m  # no fit of its own
    assert not client.get_metric_history(refit.info.run_id, "val_loss")  # no per-epoch validation either
    tmp = mlflow_store.store_dir.parent

    def frame(run_id, name):
        return pd.read_csv(_download(client, run_id, name, tmp / run_id))

    pd.testing.assert_frame_equal(frame(refit.info.run_id, "val_predictions.csv"), frame(fit_id, "val_predictions.csv"))
    # the refit alone makes the very model a full run makes (same initial weights, loaders, schedule)
    pd.testing.assert_frame_equal(frame(refit.info.run_id, "test_predictions.csv"), frame(full_id, "test_predictions.csv"))
    assert m["test_error_rate"] == full.metrics["test_error_rate"]
    # the defect threshold is the fit's (chosen on its validation predictions), and it travels with the model
    assert m["defect_threshold"] == src.metrics["defect_threshold"] == full.metrics["defect_threshold"]


def test_refit_from_a_run_of_another_policy_is_refused_before_any_run(compose_cfg, mlflow_store):
    base = [*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides]
    run(compose_cfg(*base, "trainer.refit=false"))
    (fit,) = mlflow_store.runs()
    other = compose_cfg(*base, "augment=policy", "augment.techniques.flip.m=1.0", "augment.techniques.flip.rr=0.5",
                        f"trainer.refit_from={fit.info.run_id}")
    with pytest.raises(ConfigError, match=f"trainer.refit_from={fit.info.run_id}: that run's policy is .*, this run's is"):
        run(other)
    with pytest.raises(ConfigError, match="trainer.refit_from=nope: no such run"):
        run(compose_cfg(*base, "trainer.refit_from=nope"))
    assert len(mlflow_store.runs()) == 1  # nothing was opened
