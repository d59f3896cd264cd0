"""The untracked pipeline, from a composed config to a trained model: `prepare` checks and builds, `execute` trains.

``prepare(cfg) -> Job`` does everything that can fail on bad input, so `mfexp.run` calls it before
any MLflow run opens: check the config, load the data, take ``data.subset``, build the policy and
the synth plugin, resolve ``trainer.device`` (once: the blend and the fit use ``Job.device``), seed,
build the model and name the policy. ``execute(job) -> Trained`` blends in the synthetic images,
fits (and refits on train + validation, ``trainer.refit``) and, with ``trainer.evaluate_test``,
predicts the test split. Neither function tracks anything; `mfexp.run` logs what they return, and
the benchmarks call them (or `train` / `evaluate`) directly. One exception: the synth plugin
annotates whatever MLflow run is active (which GAN made its images), so a tracked caller calls
`execute` inside its run.

Normalisation statistics come from the real training images only (after ``data.subset``, before
the synthetic blend): `prepare` builds the model, whose ``Normalize`` layer holds them, before any
synthetic image exists. Deliberately so: the served model sees real images, so their statistics
fix its input scaling; a generator whose samples drift in brightness or contrast must not shift
it; and runs with and without ``synth=gan``, or with different ``r``, scale their input the same
way, so a sweep over ``r`` compares the extra training data and nothing else. The refit on train +
validation keeps the same model, hence the same statistics.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mfexp import data as data_mod
from mfexp import progress
from mfexp.demo import default_cache_dir, make_demo
from mfexp.errors import ConfigError, MfexpError
from mfexp.loader import default_workers, make_loader
from mfexp.model import build_model
from mfexp.policy import Policy
from mfexp.policy_names import policy_name
from mfexp.train import CHECKPOINTS, History, fit, predict, resolve_device


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
    return data_mod.load_splits(str(root), d.image_size, d.channels, d.val_fraction, d.test_fraction, d.seed, d.good_class,
                                d.max_image_pixels, d.duplicates)


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
    if t.checkpoint not in CHECKPOINTS:  # fit checks it too; here it fails before any run opens
        raise ConfigError(f"trainer.checkpoint={t.checkpoint}: use {' or '.join(CHECKPOINTS)}")
    progress.check(t.progress)
    i = cfg.inspection
    if not 0 <= i.target_escape_rate < 1:
        raise ConfigError(f"inspection.target_escape_rate={i.target_escape_rate}: must be in [0, 1), e.g. 0.01 for 1 %")
    if i.gallery_size < 0:
        raise ConfigError(f"inspection.gallery_size={i.gallery_size}: must be 0 (no gallery) or more")


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
    synthetic_images: int = 0  # blended into the training split (synth), 0 without synth
    test_prob: np.ndarray | None = None  # (N, K) class probabilities on the test split (trainer.evaluate_test)
    test_labels: np.ndarray | None = None
    # (N, K) class probabilities on the validation split of the model fitted on the training split alone,
    # taken before any refit: what validation says about this policy (the sweep's delivery rule reads them)
    val_prob: np.ndarray | None = None
    val_labels: np.ndarray | None = None


@dataclass
class Job:
    """Everything `execute` needs, built and checked by `prepare`."""

    cfg: DictConfig
    splits: data_mod.Splits  # train / val / test as loaded; the training images used are `train_set`
    train_set: data_mod.ImageSet  # the real training images after data.subset, before the synthetic blend
    policy: Policy
    synth: Any | None  # the synth plugin (``generate(...)``), None for synth=none
    r: float  # synthetic share of the training split, 0.0 without synth
    device: torch.device  # trainer.device, resolved once
    model: torch.nn.Module  # untrained; normalisation from `train_set` (real images only)
    name: str  # three-word policy name (synthetic r included)


def prepare(cfg: DictConfig) -> Job:
    """Check and build everything for one training; a bad input raises MfexpError here, before any run."""
    check(cfg)
    t, d = cfg.trainer, cfg.data
    splits = load_data(d)
    train_set = data_mod.subset(splits.train, d.subset, d.seed)
    policy = build(cfg.augment, "augment")
    synth = build(cfg.synth, "synth") if cfg.synth.get("_target_") else None
    r = float(cfg.synth.get("r", 0.0)) if synth is not None else 0.0
    device = resolve_device(t.device)
    seed_everything(t)
    model = new_model(cfg, train_set)  # real images only: see the module docstring
    name = policy_name(policy.canonical({"synthetic": {"r": r}} if r > 0 else None))
    return Job(cfg, splits, train_set, policy, synth, r, device, model, name)


def execute(job: Job, on_epoch: Callable[[int, dict], None] = lambda epoch, metrics: None,
            on_blend: Callable[[int], None] = lambda n: None,
            after_fit: Callable[[Trained], None] | None = None, refit_epochs: int = 0) -> Trained:
    """Blend the synthetic images in, fit ``job.model`` (once: it is trained in place), predict the test split.

    ``on_epoch(epoch, metrics)`` gets each epoch's metrics, ``on_blend(n)`` the number of synthetic
    images before training starts, ``after_fit(trained)`` the model fitted on the training split while
    validation is still held out (before the refit; density matching scores it). ``refit_epochs > 0``
    skips the fit: the caller already knows this policy's epochs (``trainer.refit_from``), and only the
    refit on train + validation runs. Tracks nothing itself, but the synth plugin annotates the active
    MLflow run."""
    cfg, t, splits = job.cfg, job.cfg.trainer, job.splits
    train_set, n_synthetic = job.train_set, 0
    if job.synth is not None:
        xs, ys = job.synth.generate(train_set.images, train_set.labels, list(splits.classes), splits.good_class,
                                    splits.fingerprint, t.seed, job.device)
        train_set = data_mod.ImageSet(np.concatenate([train_set.images, xs]), np.concatenate([train_set.labels, ys]),
                                      train_set.classes)
        n_synthetic = len(ys)
        on_blend(n_synthetic)
    trained = train(cfg, job.model, train_set, splits.val, job.policy, on_epoch, device=job.device, after_fit=after_fit,
                    refit_epochs=refit_epochs)
    trained.synthetic_images = n_synthetic
    if t.evaluate_test:
        trained.test_prob, trained.test_labels = evaluate(trained, splits.test, t.batch_size)
    return trained


def new_model(cfg: DictConfig, train_set: data_mod.ImageSet) -> torch.nn.Module:
    pixels = train_set.images.reshape(-1, train_set.images.shape[-1]) / 255.0
    m = cfg.model
    return build_model(m.name, train_set.images.shape[-1], len(train_set.classes), cfg.data.image_size,
                       pixels.mean(0), pixels.std(0), m.pretrained, m.checkpoint, m.stem, m.drop_rate)


def train(cfg: DictConfig, model: torch.nn.Module, train_set: data_mod.ImageSet, val_set: data_mod.ImageSet, policy,
          on_epoch=lambda epoch, metrics: None, device: torch.device | None = None,
          after_fit: Callable[[Trained], None] | None = None, refit_epochs: int = 0) -> Trained:
    """The training core, free of tracking: loaders, fit, refit. ``device`` defaults to ``trainer.device``;
    ``refit_epochs > 0``: no fit, only the refit for that many epochs (its history is empty)."""
    t = cfg.trainer
    device = resolve_device(t.device) if device is None else device
    channels_last = device.type == "cuda" if str(t.channels_last).lower() == "auto" else str(t.channels_last).lower() == "true"
    if refit_epochs > 0:
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        trained = Trained(model, History(), device, channels_last, 0.0, 0.0, refit_epochs=refit_epochs)
        trained.refit_seconds = refit(cfg, model, train_set, val_set, policy, refit_epochs, device, channels_last, on_epoch)
        return trained
    pipeline = policy.image_pipeline(seed=t.seed)
    workers = t.num_workers if t.num_workers >= 0 else default_workers(pipeline is not None)
    train_loader = make_loader(train_set, t.batch_size, train=True, pipeline=pipeline, num_workers=workers, seed=t.seed)
    val_loader = make_loader(val_set, t.batch_size * 2, train=False)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    initial = copy.deepcopy(model.state_dict()) if t.refit else None
    start = time.perf_counter()
    hist = fit(model, train_loader, val_loader, policy, len(train_set.classes), t, device, channels_last,
               progress.epoch_lines(on_epoch, t.progress, "epoch", t.epochs))
    seconds = time.perf_counter() - start
    trained = Trained(model, hist, device, channels_last, seconds, len(hist.val_loss) * len(train_loader) * t.batch_size / seconds)
    trained.val_prob, trained.val_labels = predict(model, val_loader, device, channels_last)
    if after_fit is not None:
        after_fit(trained)
    if initial is not None:
        # Validation chose the number of epochs; the model kept is trained again, from the same
        # initial weights, on train + validation for that many epochs (nothing held out is wasted).
        model.load_state_dict(initial)
        trained.refit_epochs = hist.best_epoch + 1
        trained.refit_seconds = refit(cfg, model, train_set, val_set, policy, trained.refit_epochs, device,
                                      channels_last, on_epoch)
    return trained


def refit(cfg: DictConfig, model: torch.nn.Module, train_set: data_mod.ImageSet, val_set: data_mod.ImageSet, policy,
          epochs: int, device: torch.device, channels_last: bool,
          on_epoch=lambda epoch, metrics: None) -> float:
    """Train ``model``, at its initial weights, on train + validation for ``epochs`` epochs; returns the seconds.

    The same model as `train`'s refit (same seed, loaders and schedule), so a caller that already knows
    the number of epochs (a sweep delivering a candidate it trained without refit) can skip the fit."""
    t = cfg.trainer
    pipeline = policy.image_pipeline(seed=t.seed)
    workers = t.num_workers if t.num_workers >= 0 else default_workers(pipeline is not None)
    refit_cfg = OmegaConf.merge(t, {"epochs": epochs, "early_stopping_patience": 0, "checkpoint": "last"})
    both = data_mod.ImageSet(np.concatenate([train_set.images, val_set.images]),
                             np.concatenate([train_set.labels, val_set.labels]), train_set.classes)
    refit_epoch = progress.epoch_lines(on_epoch, t.progress, "refit epoch", epochs)  # validation is trained on now
    start = time.perf_counter()
    fit(model, make_loader(both, t.batch_size, train=True, pipeline=pipeline, num_workers=workers, seed=t.seed),
        make_loader(val_set, t.batch_size * 2, train=False), policy, len(train_set.classes), refit_cfg, device,
        channels_last, lambda e, ms: refit_epoch(e, {"refit_train_loss": ms["train_loss"]}))
    return time.perf_counter() - start


def evaluate(trained: Trained, data: data_mod.ImageSet, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    return predict(trained.model, make_loader(data, batch_size * 2, train=False), trained.device, trained.channels_last)


def seed_everything(t) -> None:
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
