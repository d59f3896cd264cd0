"""One tracked training run: data -> policy -> model -> fit -> test metrics -> MLflow. Returns validation loss."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import mfexp
from mfexp.policy import policy_name
from mfexp import data as data_mod
from mfexp import tracking
from mfexp.demo import default_cache_dir, make_demo
from mfexp.errors import ConfigError, MfexpError
from mfexp.loader import default_workers, make_loader
from mfexp.metrics import classification_metrics, confusion_figure, predictions_frame
from mfexp.model import Probabilities, build_model
from mfexp.train import fit, predict, resolve_device

log = logging.getLogger("mfexp")


def load_data(d) -> data_mod.Splits:
    if d.kind == "demo":
        root = make_demo(Path(d.cache_dir) if d.cache_dir else default_cache_dir(), dict(d.demo_per_class) or None,
                         d.image_size, d.seed)
    elif d.kind == "folder":
        if not d.root:
            raise ConfigError("data.root is not set: give the image folder, e.g. data=folder data.root=/path/to/images")
        root = d.root
    else:
        raise ConfigError(f"data.kind={d.kind}: use demo or folder")
    return data_mod.load_splits(str(root), d.image_size, d.channels, d.val_fraction, d.test_fraction, d.seed, d.good_class)


def build(node, what: str):
    """hydra.utils.instantiate, with our own one-line errors passed through unwrapped."""
    try:
        return instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, MfexpError):
            cause = cause.__cause__
        raise cause if cause is not None else ConfigError(f"{what}: {e}") from None


def check(cfg: DictConfig) -> None:
    t = cfg.trainer
    if t.epochs < 1:
        raise ConfigError(f"trainer.epochs={t.epochs}: must be a positive integer")
    if t.batch_size < 1:
        raise ConfigError(f"trainer.batch_size={t.batch_size}: must be a positive integer")


def run(cfg: DictConfig) -> float:
    check(cfg)
    t, d = cfg.trainer, cfg.data
    splits = load_data(d)
    train_set = data_mod.subset(splits.train, d.subset, d.seed)
    policy = build(cfg.augment, "augment")
    synth = build(cfg.synth, "synth") if cfg.synth.get("_target_") else None
    r = float(cfg.synth.get("r", 0.0)) if synth is not None else 0.0
    device = resolve_device(t.device)
    channels_last = device.type == "cuda" if str(t.channels_last).lower() == "auto" else str(t.channels_last).lower() == "true"
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)

    classes = list(splits.classes)
    pixels = train_set.images.reshape(-1, train_set.images.shape[-1]) / 255.0
    m = cfg.model
    model = build_model(m.name, train_set.images.shape[-1], len(classes), d.image_size, pixels.mean(0), pixels.std(0),
                        m.pretrained, m.checkpoint, m.small_stem, m.drop_rate)
    canonical = policy.canonical({"synthetic": {"r": r}} if r > 0 else None)
    name = policy_name(canonical)

    exp_id = tracking.setup(cfg.tracking.uri, cfg.tracking.store_dir, cfg.tracking.experiment)
    tags = {
        tracking.TAG_ROLE: cfg.tracking.role,
        tracking.TAG_FINGERPRINT: splits.fingerprint,
        tracking.TAG_POLICY: name,
        tracking.TAG_ENGINE: mfexp.__version__,
        **{(k if "." in k else f"mfexp.{k}"): str(v) for k, v in cfg.tracking.tags.items()},
    }
    log.info("run %s: policy %s on %d train / %d val / %d test images (%s), experiment %s",
             cfg.tracking.role, name, len(train_set), len(splits.val), len(splits.test), ", ".join(classes), exp_id)
    with tracking.tracked_run(cfg.tracking.run_name or name, tags, cfg.tracking.parent_run_id) as active:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        mlflow.log_params({k: str(v)[:6000] for k, v in tracking.flatten(resolved).items()})
        params = policy.params()
        if synth is not None:
            params["policy.synthetic.r"] = r
        mlflow.log_params(params)
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        mlflow.log_dict(policy.describe(), "policy.json")
        mlflow.log_dict({"classes": classes, "good_class": splits.good_class, "fingerprint": splits.fingerprint,
                         "image_size": d.image_size, "channels": int(train_set.images.shape[-1]),
                         "counts": {"train": train_set.counts(), "val": splits.val.counts(), "test": splits.test.counts()}},
                        "dataset.json")

        if synth is not None:
            xs, ys = synth.generate(train_set.images, train_set.labels, classes, splits.good_class, splits.fingerprint,
                                    t.seed, device)
            train_set = data_mod.ImageSet(np.concatenate([train_set.images, xs]), np.concatenate([train_set.labels, ys]),
                                          train_set.classes)
            mlflow.log_metric("synthetic_images", len(ys))

        pipeline = policy.image_pipeline(seed=t.seed)
        workers = t.num_workers if t.num_workers >= 0 else default_workers(pipeline is not None)
        train_loader = make_loader(train_set, t.batch_size, train=True, pipeline=pipeline, num_workers=workers, seed=t.seed)
        val_loader = make_loader(splits.val, t.batch_size * 2, train=False)
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)

        start = time.perf_counter()
        hist = fit(model, train_loader, val_loader, policy, len(classes), t, device, channels_last,
                   on_epoch=lambda e, ms: mlflow.log_metrics(ms, step=e + 1))
        seconds = time.perf_counter() - start
        mlflow.log_metrics({"best_val_loss": hist.best_val_loss, "best_epoch": hist.best_epoch + 1,
                            "epochs_run": len(hist.val_loss), "train_seconds": seconds,
                            "train_images_per_second": len(hist.val_loss) * len(train_loader) * t.batch_size / seconds})

        if t.evaluate_test:
            test_loader = make_loader(splits.test, t.batch_size * 2, train=False)
            prob, yt = predict(model, test_loader, device, channels_last)
            mlflow.log_metrics(classification_metrics(yt, prob, classes, prefix="test_"))
            with tempfile.TemporaryDirectory() as tmp:
                predictions_frame(yt, prob, classes).to_csv(Path(tmp) / "test_predictions.csv", index=False)
                mlflow.log_artifact(str(Path(tmp) / "test_predictions.csv"))
            fig = confusion_figure(yt, prob.argmax(1), classes, title=f"{cfg.tracking.role}: {name}")
            mlflow.log_figure(fig, "confusion_matrix.png")
            import matplotlib.pyplot as plt

            plt.close(fig)

        if t.log_model:
            log_model(model, splits.val.images[:2])
        log.info("%s: best val_loss %.4f at epoch %d; MLflow run %s", name, hist.best_val_loss, hist.best_epoch + 1,
                 active.info.run_id)
    return hist.best_val_loss


def log_model(model: torch.nn.Module, example_images: np.ndarray) -> None:
    """Log the model as class probabilities over float (N, C, H, W) pixels in [0, 1]."""
    from mlflow.models import infer_signature

    served = Probabilities(model).cpu().eval()
    example = (example_images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)  # batch of 2 keeps N dynamic
    with torch.no_grad():
        out = served(torch.from_numpy(example)).numpy()
    mlflow.pytorch.log_model(served, name="model", signature=infer_signature(example, out), input_example=example)
