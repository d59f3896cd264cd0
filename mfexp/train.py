"""The train loop: AdamW + one-cycle, soft-target cross-entropy, early stopping on validation loss."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from mfexp import progress
from mfexp.errors import ConfigError


CHECKPOINTS = ("last", "best")  # trainer.checkpoint: the weights fit leaves in the model


class NonFiniteLoss(RuntimeError):
    """Training diverged (NaN/inf loss): the candidate failed, not the user's input."""


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1  # the epoch whose weights the model holds after fit (trainer.checkpoint)

    @property
    def best_val_loss(self) -> float:
        """Validation loss of the weights kept: the search's objective."""
        return self.val_loss[self.best_epoch]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device={name}: not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: CUDA is not available on this machine")
    return device


def make_optimizer(model: nn.Module, t, steps: int):
    # Decay on norms and biases too by default: exempting them (timm's filter_bias_and_bn) cost
    # 1.1 points of test error on a small imbalanced set (docs/benchmarks.md, "Default recipe").
    if t.decay_norms:
        groups = [{"params": list(model.parameters()), "weight_decay": t.weight_decay}]
    else:
        groups = [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": t.weight_decay},
                  {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]  # norms and biases
    if t.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=t.lr)
    elif t.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
    else:
        raise ConfigError(f"trainer.optimizer={t.optimizer}: use adamw or sgd")
    if t.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=steps, pct_start=t.warmup_fraction)
    elif t.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif t.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    else:
        raise ConfigError(f"trainer.schedule={t.schedule}: use onecycle, cosine or constant")
    return opt, sched


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and true labels for every example of `loader`."""
    model.eval()
    probs, ys = [], []
    for x, y in loader:
        probs.append(torch.softmax(model(to_input(x, device, channels_last)).float(), 1).cpu())
        ys.append(y)
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(ys).numpy()


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, policy, num_classes: int, t,
        device: torch.device, channels_last: bool, on_epoch: Callable[[int, dict], None] = lambda e, m: None) -> History:
    """Train `model` in place. On return it holds the last epoch's weights (`t.checkpoint=last`: the
    schedule has annealed to zero there) or those of the epoch with the lowest validation loss (`best`)."""
    if t.checkpoint not in CHECKPOINTS:
        raise ConfigError(f"trainer.checkpoint={t.checkpoint}: use {' or '.join(CHECKPOINTS)}")
    opt, sched = make_optimizer(model, t, t.epochs * len(train_loader))
    mix_gen = torch.Generator().manual_seed(t.seed + 1)
    hist, best_state, stale = History(), None, 0
    for epoch in range(t.epochs):
        model.train()
        total, seen = 0.0, 0
        bar = progress.bar(train_loader, f"epoch {epoch + 1}/{t.epochs}", t.progress, t.progress_interval)
        for x, y in bar:
            x = to_input(x, device, channels_last)
            x, target = policy.mix_batch(x, y, num_classes, mix_gen)  # soft targets, mixup/cutmix/smoothing applied
            loss = F.cross_entropy(model(x), target.to(device))
            if not math.isfinite(loss.item()):
                raise NonFiniteLoss(f"non-finite training loss at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        prob, yv = predict(model, val_loader, device, channels_last)
        val_loss = float(F.nll_loss(torch.log(torch.from_numpy(prob).clamp_min(1e-12)), torch.from_numpy(yv)))
        hist.train_loss.append(total / max(seen, 1))
        hist.val_loss.append(val_loss)
        hist.val_accuracy.append(float((prob.argmax(1) == yv).mean()))
        if not math.isfinite(val_loss):
            raise NonFiniteLoss(f"non-finite validation loss at epoch {epoch + 1}")
        if hist.best_epoch < 0 or val_loss < min(hist.val_loss[:-1]):
            stale = 0
            if t.checkpoint == "best":
                hist.best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if t.checkpoint == "last":
            hist.best_epoch = epoch
        on_epoch(epoch, {"train_loss": hist.train_loss[-1], "val_loss": val_loss, "val_accuracy": hist.val_accuracy[-1]})
        if t.early_stopping_patience and stale >= t.early_stopping_patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return hist
