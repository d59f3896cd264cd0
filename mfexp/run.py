"""One tracked training run: `mfexp.job` prepares and trains, this module logs it to MLflow. Returns validation loss."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import mfexp
from mfexp import density, inspection, keys, names, tracking
from mfexp.gallery import log_gallery
from mfexp.job import execute, prepare
from mfexp.metrics import classification_metrics, confusion_figure, predictions_frame
from mfexp.model import Probabilities
from mfexp.summary import verdict

log = logging.getLogger("mfexp")


def run(cfg: DictConfig) -> float:
    job = prepare(cfg)  # every bad input fails here, before a run opens
    t, d, splits, train_set, name = cfg.trainer, cfg.data, job.splits, job.train_set, job.name
    classes = list(splits.classes)

    tags = {
        keys.TAG_ROLE: cfg.tracking.role,
        keys.TAG_FINGERPRINT: splits.fingerprint,
        keys.TAG_POLICY: name,
        keys.TAG_ENGINE: mfexp.__version__,
        **{(k if "." in k else f"{keys.PREFIX}{k}"): str(v) for k, v in cfg.tracking.tags.items()},
        **({keys.TAG_FROM_CANDIDATE: t.refit_from} if t.refit_from else {}),
    }
    renamed = {v: k for k, v in names.key_names(classes).items() if k != v}  # shown in the UI beside the metrics
    if renamed and len(json.dumps(renamed, ensure_ascii=False)) <= names.MAX_TAG_VALUE:
        tags[keys.TAG_CLASS_NAMES] = json.dumps(renamed, ensure_ascii=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    params = {k: str(v)[:names.MAX_PARAM_VALUE] for k, v in tracking.flatten(resolved).items()}
    params.update({**job.policy.params(), **({"policy.synthetic.r": job.r} if job.synth is not None else {})})
    names.check_run_keys(params, tags)  # what MLflow would refuse fails here, before the run opens
    exp_id = tracking.setup(cfg.tracking.uri, cfg.tracking.store_dir, cfg.tracking.experiment)
    fit = fit_source(t.refit_from, job) if t.refit_from else None  # checked before the run opens, too
    log.info("run %s: policy %s on %d train / %d val / %d test images (%s), experiment %s",
             cfg.tracking.role, name, len(train_set), len(splits.val), len(splits.test), ", ".join(classes), exp_id)
    with tracking.tracked_run(cfg.tracking.run_name or name, tags, cfg.tracking.parent_run_id) as active:
        mlflow.log_params(params)
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        mlflow.log_dict(job.policy.describe(), "policy.json")
        mlflow.log_dict({"classes": classes, "key_names": names.key_names(classes), **splits.intake,
                         "good_class": splits.good_class, "fingerprint": splits.fingerprint,
                         "image_size": d.image_size, "channels": int(train_set.images.shape[-1]),
                         "counts": {"train": train_set.counts(), "val": splits.val.counts(), "test": splits.test.counts()}},
                        "dataset.json")

        # Inside the run: the synth plugin annotates the active run with the GAN that made its images.
        trained = execute(job, on_epoch=lambda e, ms: mlflow.log_metrics(ms, step=e + 1),
                          on_blend=lambda n: mlflow.log_metric("synthetic_images", n),
                          after_fit=_density_probe(cfg, job) if cfg.probe.magnitudes else None,
                          refit_epochs=fit["best_epoch"] if fit else 0)
        if fit:  # the source run's fit stands for this run's: its validation results, stated as its (tag above)
            trained.val_prob, trained.val_labels = fit["val_prob"], fit["val_labels"]
            fitted = {k: fit[k] for k in (keys.BEST_VAL_LOSS, "best_epoch", keys.EPOCHS_RUN)}
        else:
            hist = trained.history
            fitted = {keys.BEST_VAL_LOSS: hist.best_val_loss, "best_epoch": hist.best_epoch + 1,
                      keys.EPOCHS_RUN: len(hist.val_loss), keys.TRAIN_SECONDS: trained.seconds,
                      "train_images_per_second": trained.images_per_second}
        mlflow.log_metrics({**fitted, **({"refit_epochs": trained.refit_epochs, "refit_seconds": trained.refit_seconds}
                                         if trained.refit_epochs else {})})
        with tempfile.TemporaryDirectory() as tmp:  # the first fit's, before any refit: what validation saw
            predictions_frame(trained.val_labels, trained.val_prob, classes, splits.val.paths).to_csv(Path(tmp) / keys.VAL_PREDICTIONS, index=False)
            mlflow.log_artifact(str(Path(tmp) / keys.VAL_PREDICTIONS))
        good, threshold, insp = inspection.good_index(classes, splits.good_class), None, cfg.inspection
        if good is not None:  # chosen on the first fit's validation predictions, applied to the delivered model
            threshold, val_metrics = inspection.validation_threshold(trained.val_labels, trained.val_prob, good,
                                                                     insp.target_escape_rate)
            mlflow.log_metrics(val_metrics)
        if t.evaluate_test:
            prob, yt = trained.test_prob, trained.test_labels
            mlflow.log_metrics(classification_metrics(yt, prob, classes, prefix="test_"))
            if good is not None:
                mlflow.log_metrics(inspection.inspection_metrics(yt, prob, good, threshold))
            if insp.gallery_size:
                log_gallery(splits.test.images, yt, prob, classes, splits.good_class, insp.gallery_size,
                            f"{cfg.tracking.role}: {name}")
            with tempfile.TemporaryDirectory() as tmp:
                predictions_frame(yt, prob, classes, splits.test.paths).to_csv(Path(tmp) / "test_predictions.csv", index=False)
                mlflow.log_artifact(str(Path(tmp) / "test_predictions.csv"))
            fig = confusion_figure(yt, prob.argmax(1), classes, title=f"{cfg.tracking.role}: {name}")
            mlflow.log_figure(fig, "confusion_matrix.png")
            import matplotlib.pyplot as plt

            plt.close(fig)
        if t.log_model:
            log_model(trained.model, splits.val.images[:2], model_metadata(job, threshold))
        log.info("%s: val_loss %.4f at epoch %d; MLflow run %s", name, fitted[keys.BEST_VAL_LOSS], fitted["best_epoch"],
                 active.info.run_id)
    if t.evaluate_test:  # after the run closed: the UI shows it FINISHED, and a summary error cannot fail it
        print(verdict(yt, prob, classes, best_epoch=int(fitted["best_epoch"]), epochs_run=int(fitted[keys.EPOCHS_RUN]),
                      refit_epochs=trained.refit_epochs, good_class=splits.good_class, threshold=threshold,
                      target_escape_rate=insp.target_escape_rate, run_name=cfg.tracking.run_name or name,
                      run_id=active.info.run_id, experiment_id=exp_id, tracking_uri=mlflow.get_tracking_uri()), flush=True)
    return float(fitted[keys.BEST_VAL_LOSS])


def fit_source(run_id: str, job) -> dict:
    """``trainer.refit_from``: the source run's fit (validation loss, epochs, validation predictions), checked to be
    this very policy on this very data. Raises ConfigError (one line, exit 2) otherwise."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mfexp.errors import ConfigError
    from mfexp.metrics import frame_to_arrays

    where = f"trainer.refit_from={run_id}"
    try:
        src = MlflowClient().get_run(run_id)
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{keys.VAL_PREDICTIONS}")
    except (MlflowException, OSError) as e:
        raise ConfigError(f"{where}: no such run with {keys.VAL_PREDICTIONS} in this store ({type(e).__name__})") from None
    m, tags = src.data.metrics, src.data.tags
    missing = [k for k in (keys.BEST_VAL_LOSS, "best_epoch", keys.EPOCHS_RUN) if k not in m]
    if missing:
        raise ConfigError(f"{where}: the run has no {', '.join(missing)}: it is not a finished fit")
    for what, theirs, ours in (("policy", tags.get(keys.TAG_POLICY), job.name),
                               ("data", tags.get(keys.TAG_FINGERPRINT), job.splits.fingerprint)):
        if theirs != ours:
            raise ConfigError(f"{where}: that run's {what} is {theirs}, this run's is {ours}: refit only the same fit")
    import io

    import pandas as pd

    y, prob, their_classes = frame_to_arrays(pd.read_csv(io.StringIO(text)))
    if list(their_classes) != list(job.splits.classes) or not np.array_equal(y, job.splits.val.labels):
        raise ConfigError(f"{where}: that run's validation predictions are not of this run's validation split "
                          "(classes or labels differ): refit only the same fit")
    return {keys.BEST_VAL_LOSS: m[keys.BEST_VAL_LOSS], "best_epoch": int(m["best_epoch"]), keys.EPOCHS_RUN: m[keys.EPOCHS_RUN],
            "val_prob": prob, "val_labels": y}


def _density_probe(cfg: DictConfig, job):
    """after_fit: score ``probe.magnitudes`` with the model fitted on the training split, log ``density.json``."""
    def probe(trained) -> None:
        start = time.perf_counter()
        p = cfg.probe
        scores = density.score(trained.model, job.splits.val, job.train_set.labels, dict(p.targets),
                               {k: list(v) for k, v in p.magnitudes.items()}, device=trained.device,
                               channels_last=trained.channels_last, batch_size=cfg.trainer.batch_size * 2,
                               repeats=p.repeats, seed=cfg.trainer.seed)
        mlflow.log_dict(scores.to_dict(), keys.DENSITY_ARTIFACT)
        mlflow.log_metrics({"density_clean_loss": scores.clean_loss, "density_prior_loss": scores.prior_loss,
                            "density_probes": len(scores.probes), "density_seconds": time.perf_counter() - start})
    return probe


def model_metadata(job, defect_threshold: float | None = None) -> dict:
    """What a user of the logged model needs to feed it images as training did (MLflow model metadata).

    ``defect_threshold`` (with a good class): flag a part defective when ``1 - P(good) >= defect_threshold``."""
    d = job.cfg.data
    meta = {"classes": list(job.splits.classes), "good_class": job.splits.good_class, "image_size": int(d.image_size),
            "channels": int(job.train_set.images.shape[-1]), "mfexp_version": mfexp.__version__}
    if defect_threshold is not None:
        meta[keys.DEFECT_THRESHOLD] = float(defect_threshold)
    return meta


def log_model(model: torch.nn.Module, example_images: np.ndarray, metadata: dict | None = None) -> None:
    """Log the model as class probabilities over float (N, C, H, W) pixels in [0, 1].

    ``metadata`` (`model_metadata`) is stored in the model's MLmodel file: classes, good class, image size, channels,
    defect threshold."""
    from mlflow.models import infer_signature

    served = Probabilities(model).cpu().eval()
    example = (example_images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)  # batch of 2 keeps N dynamic
    with torch.no_grad():
        out = served(torch.from_numpy(example)).numpy()
    # Explicit requirements: MLflow would otherwise infer them in a subprocess (~30 s per model).
    mlflow.pytorch.log_model(served, name="model", signature=infer_signature(example, out), input_example=example,
                             metadata=metadata, pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"])
