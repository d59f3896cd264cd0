"""From a composed config to a trained model, with no tracking: data, policy, model, train loop.

`mfexp.run` wraps this in an MLflow run; the benchmarks call it directly.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mfexp import data as data_mod
from mfexp.demo import default_cache_dir, make_demo
from mfexp.errors import ConfigError, MfexpError
from mfexp.loader import default_workers, make_loader
from mfexp.model import build_model
from mfexp.train import History, fit, predict, resolve_device


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


@dataclass
class Trained:
    model: torch.nn.Module
    history: History  # of the fit on the training split: validation loss is the objective
    device: torch.device
    channels_last: bool
    seconds: float
    images_per_second: float
    refit_epochs: int = 0  # > 0: the model was then retrained on train + validation for this many epochs
    refit_seconds: float = 0.0


def new_model(cfg: DictConfig, train_set: data_mod.ImageSet) -> torch.nn.Module:
    pixels = train_set.images.reshape(-1, train_set.images.shape[-1]) / 255.0
    m = cfg.model
    return build_model(m.name, train_set.images.shape[-1], len(train_set.classes), cfg.data.image_size,
                       pixels.mean(0), pixels.std(0), m.pretrained, m.checkpoint, m.stem, m.drop_rate)


def train(cfg: DictConfig, model: torch.nn.Module, train_set: data_mod.ImageSet, val_set: data_mod.ImageSet, policy,
          on_epoch=lambda epoch, metrics: None) -> Trained:
    """The training core, free of tracking: loaders, device, fit. The benchmarks call it directly."""
    t = cfg.trainer
    device = resolve_device(t.device)
    channels_last = device.type == "cuda" if str(t.channels_last).lower() == "auto" else str(t.channels_last).lower() == "true"
    pipeline = policy.image_pipeline(seed=t.seed)
    workers = t.num_workers if t.num_workers >= 0 else default_workers(pipeline is not None)
    train_loader = make_loader(train_set, t.batch_size, train=True, pipeline=pipeline, num_workers=workers, seed=t.seed)
    val_loader = make_loader(val_set, t.batch_size * 2, train=False)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    initial = copy.deepcopy(model.state_dict()) if t.refit else None
    start = time.perf_counter()
    hist = fit(model, train_loader, val_loader, policy, len(train_set.classes), t, device, channels_last, on_epoch)
    seconds = time.perf_counter() - start
    trained = Trained(model, hist, device, channels_last, seconds, len(hist.val_loss) * len(train_loader) * t.batch_size / seconds)
    if initial is not None:
        # Validation chose the number of epochs; the model kept is trained again, from the same
        # initial weights, on train + validation for that many epochs (nothing held out is wasted).
        epochs = hist.best_epoch + 1
        refit_cfg = OmegaConf.merge(t, {"epochs": epochs, "early_stopping_patience": 0, "checkpoint": "last"})
        both = data_mod.ImageSet(np.concatenate([train_set.images, val_set.images]),
                                 np.concatenate([train_set.labels, val_set.labels]), train_set.classes)
        model.load_state_dict(initial)
        start = time.perf_counter()
        fit(model, make_loader(both, t.batch_size, train=True, pipeline=pipeline, num_workers=workers, seed=t.seed),
            val_loader, policy, len(train_set.classes), refit_cfg, device, channels_last,
            lambda e, ms: on_epoch(e, {"refit_train_loss": ms["train_loss"]}))
        trained.refit_epochs, trained.refit_seconds = epochs, time.perf_counter() - start
    return trained


def evaluate(trained: Trained, data: data_mod.ImageSet, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    return predict(trained.model, make_loader(data, batch_size * 2, train=False), trained.device, trained.channels_last)


def seed_everything(t) -> None:
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
