"""Fréchet distance in a small, fixed feature space: how far generated images are from real ones.

The usual FID uses Inception-v3 features trained on ImageNet; nothing here can download those,
and ImageNet features say little about 64 px grayscale surface defects. Instead a small CNN is
trained (seeded, seconds on CPU) to classify the training split, and its penultimate layer
(``FEATURE_DIM`` numbers) is the feature space. The distance is only comparable between runs that
use the same feature net, so it is always logged beside its floor: the distance between two
halves of the real images, measured at the same sample sizes.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from torch import nn
from torch.nn import functional as F

FEATURE_DIM = 64
FEATURE_SPACE = f"penultimate layer ({FEATURE_DIM}-d) of a 4-conv CNN trained on the training split"


class FeatureNet(nn.Module):
    """Four stride-2 convs and a global average pool; any input size >= 16 px."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for c_out in (16, 32, 64, FEATURE_DIM):
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(FEATURE_DIM, max(n_classes, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1], the GAN's range."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_feature_net(
    images: np.ndarray, labels: np.ndarray, n_classes: int, seed: int, steps: int, device: torch.device
) -> FeatureNet:
    """Fit the feature net on (images, labels). With fewer than two classes it stays at its seeded
    random init: random conv features still separate image statistics, just less sharply."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(images.shape[3], n_classes).to(device)
    if len(np.unique(labels)) >= 2 and steps > 0:
        x_all, y_all = to_tensor(images), torch.from_numpy(labels)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        net.train()
        for _ in range(steps):
            idx = torch.randint(len(x_all), (min(64, len(x_all)),), generator=gen)
            loss = F.cross_entropy(net(x_all[idx].to(device)), y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def features(net: FeatureNet, images: np.ndarray, device: torch.device, batch: int = 256) -> np.ndarray:
    out = [net.features(to_tensor(images[i : i + batch]).to(device)).cpu() for i in range(0, len(images), batch)]
    return torch.cat(out).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two feature sets."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least two samples on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # Tr((S_a S_b)^(1/2)) through the symmetric form S_a^(1/2) S_b S_a^(1/2): its eigenvalues are those
    # of S_a S_b but real and >= 0, so a few hundred samples in 64-d (singular covariances) stay stable,
    # where sqrtm of the non-symmetric product can return complex or NaN entries.
    w, v = linalg.eigh(s_a)
    half_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    cross = np.sqrt(np.clip(linalg.eigvalsh(half_a @ s_b @ half_a), 0.0, None)).sum()
    d = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * cross)
    return max(d, 0.0)  # identical sets give -1e-15 from round-off
