"""mfexp.job, the untracked pipeline: the device is resolved once, synthetic images are trained on but never normalised on.

The train loop is replaced by a stub (``patch_fit``): these tests check what goes into the fit, in
seconds, not what comes out of it.
"""
from __future__ import annotations

import numpy as np
import torch
from conftest import TINY_DEMO, TINY_TRAIN, patch_fit

from mfexp import job
from mfexp.train import History


class WhiteSynth:
    """Stands in for GanSynth: ``k`` all-white images of class 1; records the device it was given."""

    def __init__(self, k: int):
        self.k, self.devices = k, []

    def generate(self, images, labels, classes, good_class, fingerprint, seed, device):
        self.devices.append(device)
        return np.full((self.k, *images.shape[1:]), 255, np.uint8), np.ones(self.k, np.int64)


def _stub_fit(sizes: list[int]):
    def fit(model, train_loader, val_loader, policy, num_classes, t, device, channels_last, on_epoch=None):
        sizes.append(len(train_loader.dataset))
        on_epoch(0, {"train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5})
        return History([1.0], [1.0], [0.5], 0)

    return fit


def test_synthetic_images_are_trained_on_but_the_normalisation_is_real_only(compose_cfg, monkeypatch):
    sizes, resolved = [], []
    patch_fit(monkeypatch, _stub_fit(sizes))
    original = job.resolve_device
    monkeypatch.setattr(job, "resolve_device", lambda name: resolved.append(name) or original(name))

    prepared = job.prepare(compose_cfg(*TINY_DEMO, *TINY_TRAIN, "trainer.refit=false"))
    real = prepared.train_set.images.reshape(-1, prepared.train_set.images.shape[-1]) / 255.0
    n = len(prepared.train_set)
    prepared.synth = synth = WhiteSynth(n)  # as many white images as real ones: the mean would move a lot
    blended: list[int] = []
    trained = job.execute(prepared, on_blend=blended.append)

    assert sizes == [2 * n] and blended == [n] and trained.synthetic_images == n  # trained on real + synthetic
    assert resolved == ["auto"] and synth.devices == [prepared.device] and trained.device == prepared.device
    norm = trained.model.normalize
    assert torch.allclose(norm.mean.flatten(), torch.as_tensor(real.mean(0), dtype=torch.float32))
    assert torch.allclose(norm.std.flatten(), torch.as_tensor(real.std(0), dtype=torch.float32).clamp_min(1e-3))
    assert trained.test_prob.shape == (len(prepared.splits.test), len(prepared.splits.classes))
    assert (trained.test_labels == prepared.splits.test.labels).all()
