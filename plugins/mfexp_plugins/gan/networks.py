"""The GAN's networks: a class-conditional generator, a projection discriminator, and sampling from a generator.

SNGAN-style, small enough for CPU: the generator maps (z, class embedding) through transposed convs
with batch norm up from 4x4; the discriminator is a stack of spectrally normalised stride-2 convs
with a minibatch-std feature and a projection head for the class. DiffAugment's shifts (`translate`)
are applied alike to real and fake images before D sees them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

# Fixed choices; they are part of the GAN key (synth.py), so changing one here never reuses an old GAN.
MBSTD = True  # minibatch-std feature in D
TRANSLATE = 0.125  # DiffAugment: random shifts of up to this share of the image size


class Generator(nn.Module):
    def __init__(self, latent_dim: int, n_classes: int, width: int, image_size: int, channels: int) -> None:
        super().__init__()
        self.image_size, self.channels = image_size, channels
        n_up = int(math.log2(image_size)) - 2  # 4x4 -> image_size
        c = width * 2 ** (n_up - 1)
        self.embed = nn.Embedding(n_classes, latent_dim)
        self.stem = nn.Sequential(nn.Linear(2 * latent_dim, c * 16), nn.Unflatten(1, (c, 4, 4)), nn.BatchNorm2d(c), nn.ReLU(True))
        layers: list[nn.Module] = []
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(torch.cat([z, self.embed(y)], 1)))


class Discriminator(nn.Module):
    """Spectral norm on every layer keeps D 1-Lipschitz-ish, which is what makes a few hundred images trainable."""

    def __init__(self, n_classes: int, width: int, image_size: int, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c = channels, width
        for _ in range(int(math.log2(image_size)) - 2):  # image_size -> 4x4
            layers += [spectral_norm(nn.Conv2d(c_in, c, 4, 2, 1)), nn.LeakyReLU(0.1, True)]
            c_in, c = c, c * 2
        self.body = nn.Sequential(*layers)
        # Minibatch standard deviation (Karras et al. 2018) as one more feature map: a batch of
        # near-identical fakes is then easy to spot, which is what stops the generator collapsing.
        self.final = nn.Sequential(spectral_norm(nn.Conv2d(c_in + int(MBSTD), c_in, 3, 1, 1)), nn.LeakyReLU(0.1, True))
        self.linear = spectral_norm(nn.Linear(c_in, 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, c_in))  # projection discriminator (Miyato & Koyama 2018)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if MBSTD:
            h = torch.cat([h, h.std(0, unbiased=False).mean().expand(h.size(0), 1, *h.shape[2:])], 1)
        h = self.final(h).sum((2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


@torch.no_grad()
def sample(
    net: Generator, label: int, n: int, latent_dim: int, noise_scale: float, rng: torch.Generator, device: torch.device
) -> np.ndarray:
    """n images of one class as uint8 (n, H, W, C). noise_scale multiplies the latent's std:
    below 1 is the truncation trick (typical, cleaner images), above 1 adds variation."""
    if n == 0:
        return np.zeros((0, net.image_size, net.image_size, net.channels), np.uint8)
    was_training = net.training
    net.eval()
    out = []
    for start in range(0, n, 512):
        k = min(512, n - start)
        z = (torch.randn(k, latent_dim, generator=rng) * noise_scale).to(device)
        x = net(z, torch.full((k,), label, dtype=torch.long, device=device))
        out.append(((x.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    net.train(was_training)
    return np.concatenate(out)


def shifts(n: int, size: int, rng: torch.Generator, device: torch.device) -> torch.Tensor | None:
    """Random whole-pixel shifts of up to TRANSLATE x size, in grid_sample's [-1, 1] units."""
    k = int(TRANSLATE * size)
    if k == 0:
        return None
    return (torch.randint(-k, k + 1, (n, 2), generator=rng).float() * 2 / size).to(device)


def translate(x: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al. 2020, DiffAugment): real and fake images are shifted
    alike before D sees them, so a few hundred images do not let D memorise the training set.
    Whole-pixel shifts sample exactly at pixel centres: no interpolation blur to leak into G."""
    if shift is None:
        return x
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="reflection", align_corners=False)
