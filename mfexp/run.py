"""One tracked training run: `mfexp.job` prepares and trains, this module logs it to MLflow. Returns validation loss."""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import mfexp
from mfexp import density, inspection, keys, tracking
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

    exp_id = tracking.setup(cfg.tracking.uri, cfg.tracking.store_dir, cfg.tracking.experiment)
    tags = {
        keys.TAG_ROLE: cfg.tracking.role,
        keys.TAG_FINGERPRINT: splits.fingerprint,
        keys.TAG_POLICY: name,
        keys.TAG_ENGINE: mfexp.__version__,
        **{(k if "." in k else f"{keys.PREFIX}{k}"): str(v) for k, v in cfg.tracking.tags.items()},
    }
    log.info("run %s: policy %s on %d train / %d val / %d test images (%s), experiment %s",
             cfg.tracking.role, name, len(train_set), len(splits.val), len(splits.test), ", ".join(classes), exp_id)
    with tracking.tracked_run(cfg.tracking.run_name or name, tags, cfg.tracking.parent_run_id) as active:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        mlflow.log_params({k: str(v)[:6000] for k, v in tracking.flatten(resolved).items()})
        params = job.policy.params()
        if job.synth is not None:
            params["policy.synthetic.r"] = job.r
        mlflow.log_params(params)
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        mlflow.log_dict(job.policy.describe(), "policy.json")
        mlflow.log_dict({"classes": classes, "good_class": splits.good_class, "fingerprint": splits.fingerprint,
                         "image_size": d.image_size, "channels": int(train_set.images.shape[-1]),
                         "counts": {"train": train_set.counts(), "val": splits.val.counts(), "test": splits.test.counts()}},
                        "dataset.json")

        # Inside the run: the synth plugin annotates the active run with the GAN that made its images.
        trained = execute(job, on_epoch=lambda e, ms: mlflow.log_metrics(ms, step=e + 1),
                          on_blend=lambda n: mlflow.log_metric("synthetic_images", n),
                          after_fit=_density_probe(cfg, job) if cfg.probe.magnitudes else None)
        hist = trained.history
        mlflow.log_metrics({keys.BEST_VAL_LOSS: hist.best_val_loss, "best_epoch": hist.best_epoch + 1,
                            keys.EPOCHS_RUN: len(hist.val_loss), keys.TRAIN_SECONDS: trained.seconds,
                            "train_images_per_second": trained.images_per_second,
                            **({"refit_epochs": trained.refit_epochs, "refit_seconds": trained.refit_seconds}
                               if trained.refit_epochs else {})})
        with tempfile.TemporaryDirectory() as tmp:  # the first fit's, before any refit: what validation saw
            predictions_frame(trained.val_labels, trained.val_prob, classes).to_csv(Path(tmp) / keys.VAL_PREDICTIONS, index=False)
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
                predictions_frame(yt, prob, classes).to_csv(Path(tmp) / "test_predictions.csv", index=False)
                mlflow.log_artifact(str(Path(tmp) / "test_predictions.csv"))
            fig = confusion_figure(yt, prob.argmax(1), classes, title=f"{cfg.tracking.role}: {name}")
            mlflow.log_figure(fig, "confusion_matrix.png")
            import matplotlib.pyplot as plt

            plt.close(fig)
        if t.log_model:
            log_model(trained.model, splits.val.images[:2], model_metadata(job, threshold))
        log.info("%s: val_loss %.4f at epoch %d; MLflow run %s", name, hist.best_val_loss, hist.best_epoch + 1,
                 active.info.run_id)
    if t.evaluate_test:  # after the run closed: the UI shows it FINISHED, and a summary error cannot fail it
        print(verdict(yt, prob, classes, best_epoch=hist.best_epoch + 1, epochs_run=len(hist.val_loss),
                      refit_epochs=trained.refit_epochs, good_class=splits.good_class, threshold=threshold,
                      target_escape_rate=insp.target_escape_rate, run_name=cfg.tracking.run_name or name,
                      run_id=active.info.run_id, experiment_id=exp_id, tracking_uri=mlflow.get_tracking_uri()), flush=True)
    return hist.best_val_loss


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
