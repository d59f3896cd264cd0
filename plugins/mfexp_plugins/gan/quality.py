"""How good the GAN is: Fréchet distances (generated vs real, and the real-vs-real floor), sample grids, loss figure."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mfexp_plugins import fid

from .networks import Generator, sample
from .settings import GanSettings


def frechet_distances(
    s: GanSettings, net: Generator, x: np.ndarray, y: np.ndarray, images: np.ndarray, labels: np.ndarray,
    device: torch.device,
) -> dict[str, float]:
    """Fréchet distance real-vs-generated, and real-vs-real between two halves as the floor.

    Half A of the real images is compared with half B (the floor) and with as many generated
    images as B has, class by class: equal sample sizes, because the estimate is biased upwards
    for small samples and the two numbers must be comparable."""
    rng = np.random.default_rng(s.train_seed)
    half_a, half_b = [], []
    for i in range(int(y.max()) + 1):
        members = rng.permutation(np.flatnonzero(y == i))
        half_a.append(members[: (len(members) + 1) // 2])
        half_b.append(members[(len(members) + 1) // 2 :])
    a, b = np.concatenate(half_a), np.concatenate(half_b)
    if len(a) < 2 or len(b) < 2:
        return {}
    feat_net = fid.train_feature_net(images, labels, int(labels.max()) + 1, s.train_seed, s.fid_steps, device)
    grng = torch.Generator().manual_seed(s.train_seed + 1)
    fake = np.concatenate([sample(net, i, len(hb), s.latent_dim, 1.0, grng, device) for i, hb in enumerate(half_b)])
    f_a, f_b, f_fake = (fid.features(feat_net, arr, device) for arr in (x[a], x[b], fake))
    return {"gan.fid": fid.frechet_distance(f_a, f_fake), "gan.fid_floor": fid.frechet_distance(f_a, f_b)}


def save_grid(images: np.ndarray, path: Path, cols: int = 8, pad: int = 2) -> None:
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = im
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)


def save_quality_figure(losses: dict[str, list[float]], quality: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_q) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    for name, values in losses.items():
        v = np.asarray(values)
        k = max(1, len(v) // 50)  # moving average: per-step GAN losses are too noisy to read
        ax_l.plot(np.convolve(v, np.ones(k) / k, mode="valid"), label=name.removeprefix("gan."))
    ax_l.set_xlabel("step")
    ax_l.set_title("hinge losses")
    ax_l.legend()
    if quality:
        ax_q.bar(["generated", "real (floor)"], [quality["gan.fid"], quality["gan.fid_floor"]], color=["C1", "C2"])
    ax_q.set_title("Fréchet distance to real (lower is better)")
    ax_q.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
