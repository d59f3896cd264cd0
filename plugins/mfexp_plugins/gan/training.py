"""Training the GAN: hinge loss, Adam, DiffAugment shifts for D and a mode-seeking term for G."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from mlflow.entities import Metric
from torch.nn import functional as F
from mfexp import progress
from mfexp_plugins import fid

from .networks import Discriminator, Generator, shifts, translate
from .settings import GanSettings
from .store import now

BETAS = (0.5, 0.999)  # Adam; SNGAN's choice for one D step per G step (part of the GAN key)


def train(
    s: GanSettings, x: np.ndarray, y: np.ndarray, n_classes: int, device: torch.device, log: Callable[[list[Metric]], None]
) -> tuple[Generator, dict[str, list[float]]]:
    """Train on uint8 images x with labels y in 0..n_classes-1; losses go to `log` in batches as it runs."""
    size, channels = x.shape[1], x.shape[3]
    # Seed only inside fork_rng: the caller's own RNG stream (its model init, shuffling) stays as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.train_seed)
        net_g = Generator(s.latent_dim, n_classes, s.width, size, channels).to(device)
        net_d = Discriminator(n_classes, s.width, size, channels).to(device)
    opt_g = torch.optim.Adam(net_g.parameters(), s.lr, betas=BETAS)
    opt_d = torch.optim.Adam(net_d.parameters(), s.lr, betas=BETAS)
    xt, yt = fid.to_tensor(x), torch.from_numpy(y).long()
    # Batches and latents come from a CPU generator so a seed gives the same run on any device.
    rng = torch.Generator().manual_seed(s.train_seed)
    bs = min(s.batch_size, len(xt))
    losses: dict[str, list[float]] = {"gan.g_loss": [], "gan.d_loss": []}
    pending: list[Metric] = []
    net_g.train()
    for step in progress.bar(range(s.steps), "GAN", "auto" if s.progress else "off"):  # a line a minute in a file
        idx = torch.randint(len(xt), (bs,), generator=rng)
        real, y_real = xt[idx].to(device), yt[idx].to(device)
        # Fake labels are drawn from the real labels, so D sees the same class mix on both sides.
        y_half = yt[torch.randint(len(xt), ((bs + 1) // 2,), generator=rng)]
        y_fake = y_half.repeat(2)[:bs].to(device)  # both halves alike, for mode seeking
        z = torch.randn(bs, s.latent_dim, generator=rng).to(device)
        fake = net_g(z, y_fake)
        offsets = [shifts(bs, size, rng, device) for _ in range(3)]
        d_real = net_d(translate(real, offsets[0]), y_real)
        d_fake = net_d(translate(fake.detach(), offsets[1]), y_fake)
        d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = -net_d(translate(fake, offsets[2]), y_fake).mean()  # logged: the adversarial part alone
        g_total = g_loss
        if s.mode_seeking and bs >= 2:
            # Mode seeking (Mao et al. 2019): the two halves share labels, so penalise G when
            # different latents give similar images. Without it G ignores z: every sample of a
            # class came out the same image (demo data, measured), useless as extra variation.
            h = bs // 2
            ratio = (fake[:h] - fake[h : 2 * h]).abs().mean() / (z[:h] - z[h : 2 * h]).abs().mean()
            g_total = g_loss + s.mode_seeking / (ratio + 1e-5)
        opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        opt_g.step()
        ts = now()
        for name, value in (("gan.g_loss", g_loss.item()), ("gan.d_loss", d_loss.item())):
            losses[name].append(value)
            pending.append(Metric(name, value, ts, step))
        if len(pending) >= 1000 or step == s.steps - 1:  # MLflow takes at most 1000 metrics per batch
            log(pending)
            pending = []
    return net_g.eval(), losses
