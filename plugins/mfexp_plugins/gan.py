"""Synthetic training images from a class-conditional GAN trained on the defect classes.

``GanSynth`` is the ``synth`` plugin (``conf/synth/gan.yaml``). ``generate`` returns
``round(r x N)`` labelled uint8 images for the training split only; the caller blends them in
before augmentation. The GAN itself is trained at most once per key and kept as an MLflow run of
its own (tag ``mfexp.role=gan``): the key hashes the training images, the dataset fingerprint and
every knob that changes the trained weights, and none of the knobs that only change generation
(``r``, ``proportions``, ``noise_scale``, the generation seed), so a sweep over ``r`` trains one GAN.

Architecture (SNGAN-style, small enough for CPU): the generator maps (z, class embedding) through
transposed convs with batch norm up from 4x4; the discriminator is a stack of spectrally
normalised stride-2 convs with a minibatch-std feature and a projection head for the class; hinge
loss, Adam(0.5, 0.999). A few hundred images need two more things: shifted copies for D
(DiffAugment) and a mode-seeking term for G, without which G ignores z. See docs/synthetic.md.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.entities import Metric, Run, RunStatus
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm
from tqdm.auto import tqdm

from mfexp.errors import ConfigError, DataError
from mfexp_plugins import fid

GAN_VERSION = 1  # bump when the architecture or training changes: old generators stop matching
SUPPORTED_SIZES = (16, 32, 64, 128)  # 16 px only for fast tests; the networks are sized for 32-128
TAG_ROLE = "mfexp.role"
TAG_GAN_KEY = "mfexp.gan_key"
TAG_GAN_RUN = "mfexp.gan_run_id"  # set on the caller's run: which generator made its synthetic images
GENERATOR_ARTIFACT = "generator/generator.pt"
# Fixed training choices; they are part of the key, so changing one here never reuses an old GAN.
MBSTD = True  # minibatch-std feature in D
TRANSLATE = 0.125  # DiffAugment: random shifts of up to this share of the image size
BETAS = (0.5, 0.999)  # Adam; SNGAN's choice for one D step per G step


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


class GanSynth:
    """The ``synth`` plugin: train (or reuse) a conditional GAN, then sample ``round(r x N)`` labelled images."""

    def __init__(
        self,
        r: float = 0.1,
        classes: Sequence[str] | None = None,
        proportions: str | Mapping[str, float] | None = None,
        noise_scale: float = 1.0,
        steps: int = 1500,
        batch_size: int = 32,
        lr: float = 2e-4,
        latent_dim: int = 64,
        width: int = 16,
        mode_seeking: float = 1.0,
        train_seed: int = 0,
        fid_steps: int = 300,
        progress: bool = True,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ConfigError(f"synth: unknown key(s) {sorted(unknown)} for the GAN plugin (see conf/synth/gan.yaml)")
        self.r = _number("r", r, minimum=0.0)
        self.classes = None if classes is None else [str(c) for c in classes]
        if self.classes is not None and not self.classes:
            raise ConfigError("synth.classes=[]: name at least one class, or null for every class but data.good_class")
        self.proportions = _proportions(proportions)
        self.noise_scale = _number("noise_scale", noise_scale, minimum=0.0, strict=True)
        self.steps = _integer("steps", steps, minimum=1)
        self.batch_size = _integer("batch_size", batch_size, minimum=1)
        self.lr = _number("lr", lr, minimum=0.0, strict=True)
        self.latent_dim = _integer("latent_dim", latent_dim, minimum=1)
        self.width = _integer("width", width, minimum=1)
        self.mode_seeking = _number("mode_seeking", mode_seeking, minimum=0.0)
        self.train_seed = _integer("train_seed", train_seed)
        self.fid_steps = _integer("fid_steps", fid_steps, minimum=0)
        self.progress = bool(progress)

    # ------------------------------------------------------------------ public API

    def generate(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str],
        good_class: str | None,
        fingerprint: str,
        seed: int,
        device: torch.device | str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``round(r x len(images))`` synthetic uint8 images shaped like ``images`` and their int64 labels.

        Only the training split may be passed in: the GAN learns from these images, and the output is
        meant for training only. Reuses the oldest FINISHED GAN run with the same key in the current
        MLflow experiment, else trains one (a separate run, the caller's active run is untouched)."""
        classes = [str(c) for c in classes]
        _check_images(images, labels, classes)
        n_out = round(self.r * len(images))
        h, w, c = images.shape[1:]
        if n_out == 0:
            return np.zeros((0, h, w, c), np.uint8), np.zeros((0,), np.int64)
        chosen = self._chosen_classes(labels, classes, good_class)
        counts = self._class_counts(n_out, chosen, labels, classes)
        device = torch.device(device)

        mask = np.isin(labels, [classes.index(k) for k in chosen])
        key = self.key(images[mask], labels[mask], classes, chosen, fingerprint)
        client = mlflow.MlflowClient()
        exp_id = _experiment_id()
        run = find_gan_run(client, exp_id, key)
        if run is None:
            self._train_run(client, exp_id, key, images, labels, classes, chosen, fingerprint, device)
            # Two processes may have trained the same key at once; everyone uses the oldest FINISHED one.
            run = find_gan_run(client, exp_id, key)
            assert run is not None, "the GAN run just finished but cannot be found"
        gen_net, gen_classes = _load_generator(run.info.run_id, device)

        out_x, out_y = [], []
        rng = torch.Generator().manual_seed(int(seed))
        for name, k in counts.items():
            out_x.append(_sample(gen_net, gen_classes.index(name), k, self.latent_dim, self.noise_scale, rng, device))
            out_y.append(np.full(k, classes.index(name), np.int64))
        self._annotate_caller(client, run.info.run_id, counts)
        return np.concatenate(out_x), np.concatenate(out_y)

    def key(
        self, images: np.ndarray, labels: np.ndarray, classes: Sequence[str], chosen: Sequence[str], fingerprint: str
    ) -> str:
        """sha256 of what the trained weights depend on: the GAN's own training images and knobs.

        The images themselves are hashed because the dataset fingerprint is taken before splitting:
        another split seed or ``data.subset`` gives other training images, hence another GAN."""
        data = hashlib.sha256(np.ascontiguousarray(images).tobytes())
        data.update(json.dumps([classes[i] for i in labels.tolist()]).encode())
        spec = {
            "version": GAN_VERSION,
            "fingerprint": fingerprint,
            "data": data.hexdigest(),
            "shape": list(images.shape[1:]),
            "classes": list(chosen),
            "fixed": [MBSTD, TRANSLATE, list(BETAS)],
            **self._train_config(),
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ choosing what to make

    def _chosen_classes(self, labels: np.ndarray, classes: list[str], good_class: str | None) -> list[str]:
        present = set(np.unique(labels).tolist())
        if good_class is not None and good_class not in classes:
            raise ConfigError(f"data.good_class={good_class}: not one of the classes {classes}")
        if self.classes is not None:
            unknown = [k for k in self.classes if k not in classes]
            if unknown:
                raise ConfigError(f"synth.classes: {unknown} not among the classes {classes}")
            empty = [k for k in self.classes if classes.index(k) not in present]
            if empty:
                raise DataError(f"synth.classes: no training images in {empty}; the GAN has nothing to learn from")
            return list(dict.fromkeys(self.classes))
        chosen = [k for i, k in enumerate(classes) if k != good_class and i in present]
        if not chosen:
            raise DataError(f"synth: no training images outside data.good_class={good_class}; nothing for the GAN to learn")
        return chosen

    def _class_counts(self, n: int, chosen: list[str], labels: np.ndarray, classes: list[str]) -> dict[str, int]:
        """Split n across the chosen classes by weight; largest remainders so the total is exactly n."""
        if self.proportions is None:
            real = np.bincount(labels, minlength=len(classes))
            weights = np.array([real[classes.index(k)] for k in chosen], float)
        elif self.proportions == "uniform":
            weights = np.ones(len(chosen))
        else:
            stray = [k for k in self.proportions if k not in chosen]
            if stray:
                raise ConfigError(f"synth.proportions: {stray} not among the GAN's classes {chosen}")
            weights = np.array([self.proportions.get(k, 0.0) for k in chosen], float)
        share = n * weights / weights.sum()
        counts = np.floor(share).astype(int)
        order = np.argsort(-(share - counts), kind="stable")
        counts[order[: n - counts.sum()]] += 1
        return {k: int(m) for k, m in zip(chosen, counts)}

    def _train_config(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "latent_dim": self.latent_dim,
            "width": self.width,
            "train_seed": self.train_seed,
            "mode_seeking": self.mode_seeking,
        }

    # ------------------------------------------------------------------ training, as an MLflow run of its own

    def _train_run(
        self,
        client: mlflow.MlflowClient,
        exp_id: str,
        key: str,
        images: np.ndarray,
        labels: np.ndarray,
        classes: list[str],
        chosen: list[str],
        fingerprint: str,
        device: torch.device,
    ) -> str:
        idx = [classes.index(k) for k in chosen]
        mask = np.isin(labels, idx)
        to_gan = np.full(len(classes), -1, np.int64)
        to_gan[idx] = np.arange(len(idx))  # the GAN's class i is chosen[i]
        x, y = images[mask], to_gan[labels[mask]]
        tags = {TAG_ROLE: "gan", TAG_GAN_KEY: key, "mfexp.fingerprint": fingerprint}
        caller = mlflow.active_run()
        if caller is not None:
            tags["mfexp.requested_by"] = caller.info.run_id
        run_id = client.create_run(exp_id, run_name=f"gan-{key[:8]}", tags=tags).info.run_id
        try:
            params = {f"gan.{k}": v for k, v in self._train_config().items()}
            params.update({
                "gan.version": GAN_VERSION,
                "gan.image_size": x.shape[1],
                "gan.channels": x.shape[3],
                "gan.classes": ",".join(chosen),
                "gan.n_real": len(x),
                "gan.device": str(device),
                "gan.fid_features": fid.FEATURE_SPACE,
                "gan.fid_steps": self.fid_steps,
                **{f"gan.count.{_safe(k)}": int((y == i).sum()) for i, k in enumerate(chosen)},
            })
            for name, value in params.items():
                client.log_param(run_id, name, value)
            t0 = time.perf_counter()
            net, losses = self._train(x, y, len(chosen), device, lambda batch: client.log_batch(run_id, metrics=batch))
            train_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                (out / "generator").mkdir()
                arch = {"latent_dim": self.latent_dim, "width": self.width, "image_size": x.shape[1], "channels": x.shape[3]}
                torch.save({"state_dict": net.state_dict(), "arch": arch, "classes": chosen}, out / GENERATOR_ARTIFACT)
                (out / "samples").mkdir()
                grid_rng = torch.Generator().manual_seed(self.train_seed)
                for i, k in enumerate(chosen):
                    grid = _sample(net, i, 64, self.latent_dim, 1.0, grid_rng, device)
                    _save_grid(grid, out / "samples" / f"{_safe(k)}.png")
                quality = self._quality(net, x, y, images, labels, device)
                (out / "quality").mkdir()
                _save_quality_figure(losses, quality, out / "quality" / "gan_quality.png")
                client.log_artifacts(run_id, tmp)
            metrics = {"gan.train_seconds": train_s, **quality}
            client.log_batch(run_id, metrics=[Metric(k, float(v), _now(), 0) for k, v in metrics.items()])
        except BaseException:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run_id

    def _train(
        self, x: np.ndarray, y: np.ndarray, n_classes: int, device: torch.device, log: Callable[[list[Metric]], None]
    ) -> tuple[Generator, dict[str, list[float]]]:
        """Train on uint8 images x with labels y in 0..n_classes-1; losses go to `log` in batches as it runs."""
        size, channels = x.shape[1], x.shape[3]
        # Seed only inside fork_rng: the caller's own RNG stream (its model init, shuffling) stays as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.train_seed)
            net_g = Generator(self.latent_dim, n_classes, self.width, size, channels).to(device)
            net_d = Discriminator(n_classes, self.width, size, channels).to(device)
        opt_g = torch.optim.Adam(net_g.parameters(), self.lr, betas=BETAS)
        opt_d = torch.optim.Adam(net_d.parameters(), self.lr, betas=BETAS)
        xt, yt = fid.to_tensor(x), torch.from_numpy(y).long()
        # Batches and latents come from a CPU generator so a seed gives the same run on any device.
        rng = torch.Generator().manual_seed(self.train_seed)
        bs = min(self.batch_size, len(xt))
        losses: dict[str, list[float]] = {"gan.g_loss": [], "gan.d_loss": []}
        pending: list[Metric] = []
        net_g.train()
        for step in tqdm(range(self.steps), desc="GAN", disable=not self.progress, leave=False):
            idx = torch.randint(len(xt), (bs,), generator=rng)
            real, y_real = xt[idx].to(device), yt[idx].to(device)
            # Fake labels are drawn from the real labels, so D sees the same class mix on both sides.
            y_half = yt[torch.randint(len(xt), ((bs + 1) // 2,), generator=rng)]
            y_fake = y_half.repeat(2)[:bs].to(device)  # both halves alike, for mode seeking
            z = torch.randn(bs, self.latent_dim, generator=rng).to(device)
            fake = net_g(z, y_fake)
            shifts = [_shifts(bs, size, rng, device) for _ in range(3)]
            d_real = net_d(_translate(real, shifts[0]), y_real)
            d_fake = net_d(_translate(fake.detach(), shifts[1]), y_fake)
            d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = -net_d(_translate(fake, shifts[2]), y_fake).mean()  # logged: the adversarial part alone
            g_total = g_loss
            if self.mode_seeking and bs >= 2:
                # Mode seeking (Mao et al. 2019): the two halves share labels, so penalise G when
                # different latents give similar images. Without it G ignores z: every sample of a
                # class came out the same image (demo data, measured), useless as extra variation.
                h = bs // 2
                ratio = (fake[:h] - fake[h : 2 * h]).abs().mean() / (z[:h] - z[h : 2 * h]).abs().mean()
                g_total = g_loss + self.mode_seeking / (ratio + 1e-5)
            opt_g.zero_grad(set_to_none=True)
            g_total.backward()
            opt_g.step()
            ts = _now()
            for name, value in (("gan.g_loss", g_loss.item()), ("gan.d_loss", d_loss.item())):
                losses[name].append(value)
                pending.append(Metric(name, value, ts, step))
            if len(pending) >= 1000 or step == self.steps - 1:  # MLflow takes at most 1000 metrics per batch
                log(pending)
                pending = []
        return net_g.eval(), losses

    def _quality(
        self, net: Generator, x: np.ndarray, y: np.ndarray, images: np.ndarray, labels: np.ndarray, device: torch.device
    ) -> dict[str, float]:
        """Fréchet distance real-vs-generated, and real-vs-real between two halves as the floor.

        Half A of the real images is compared with half B (the floor) and with as many generated
        images as B has, class by class: equal sample sizes, because the estimate is biased upwards
        for small samples and the two numbers must be comparable."""
        rng = np.random.default_rng(self.train_seed)
        half_a, half_b = [], []
        for i in range(int(y.max()) + 1):
            members = rng.permutation(np.flatnonzero(y == i))
            half_a.append(members[: (len(members) + 1) // 2])
            half_b.append(members[(len(members) + 1) // 2 :])
        a, b = np.concatenate(half_a), np.concatenate(half_b)
        if len(a) < 2 or len(b) < 2:
            return {}
        feat_net = fid.train_feature_net(images, labels, int(labels.max()) + 1, self.train_seed, self.fid_steps, device)
        grng = torch.Generator().manual_seed(self.train_seed + 1)
        fake = np.concatenate([_sample(net, i, len(hb), self.latent_dim, 1.0, grng, device) for i, hb in enumerate(half_b)])
        f_a, f_b, f_fake = (fid.features(feat_net, arr, device) for arr in (x[a], x[b], fake))
        return {"gan.fid": fid.frechet_distance(f_a, f_fake), "gan.fid_floor": fid.frechet_distance(f_a, f_b)}

    def _annotate_caller(self, client: mlflow.MlflowClient, gan_run_id: str, counts: dict[str, int]) -> None:
        """Record on the caller's run which generator made its synthetic images, and how many per class."""
        caller = mlflow.active_run()
        if caller is None:
            return
        client.set_tag(caller.info.run_id, TAG_GAN_RUN, gan_run_id)
        metrics = {f"synth.count.{_safe(k)}": n for k, n in counts.items()} | {"synth.count": sum(counts.values())}
        client.log_batch(caller.info.run_id, metrics=[Metric(k, float(v), _now(), 0) for k, v in metrics.items()])


# ---------------------------------------------------------------------- MLflow lookups


def find_gan_run(client: mlflow.MlflowClient, experiment_id: str, key: str) -> Run | None:
    """The oldest FINISHED GAN run with this key (ties by run id), so every process picks the same one."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_ROLE}` = 'gan' and tags.`{TAG_GAN_KEY}` = '{key}' and attributes.status = 'FINISHED'",
    )
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id), default=None)


def _experiment_id() -> str:
    active = mlflow.active_run()
    if active is not None:
        return active.info.experiment_id
    # No active run: the experiment chosen with mlflow.set_experiment (MLflow's "Default" otherwise).
    from mlflow.tracking.fluent import _get_experiment_id

    return _get_experiment_id() or "0"


def _load_generator(run_id: str, device: torch.device) -> tuple[Generator, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=GENERATOR_ARTIFACT, dst_path=tmp)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    arch, names = ckpt["arch"], list(ckpt["classes"])
    net = Generator(arch["latent_dim"], len(names), arch["width"], arch["image_size"], arch["channels"])
    net.load_state_dict(ckpt["state_dict"])
    return net.to(device).eval(), names


# ---------------------------------------------------------------------- small helpers


@torch.no_grad()
def _sample(
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


def _shifts(n: int, size: int, rng: torch.Generator, device: torch.device) -> torch.Tensor | None:
    """Random whole-pixel shifts of up to TRANSLATE x size, in grid_sample's [-1, 1] units."""
    k = int(TRANSLATE * size)
    if k == 0:
        return None
    return (torch.randint(-k, k + 1, (n, 2), generator=rng).float() * 2 / size).to(device)


def _translate(x: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
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


def _save_grid(images: np.ndarray, path: Path, cols: int = 8, pad: int = 2) -> None:
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = im
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)


def _save_quality_figure(losses: dict[str, list[float]], quality: dict[str, float], path: Path) -> None:
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


def _check_images(images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(f"synth: expected uint8 images shaped (N, H, W, C), got {getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}")
    n, h, w, c = images.shape
    if c not in (1, 3):
        raise DataError(f"synth: images need 1 or 3 channels, got {c}")
    if h != w or h not in SUPPORTED_SIZES:
        raise ConfigError(f"data.image_size={h if h == w else (h, w)}: the GAN plugin supports square {SUPPORTED_SIZES} px images")
    if labels.shape != (n,):
        raise DataError(f"synth: {n} images but labels shaped {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"synth: labels outside 0..{len(classes) - 1}")


def _number(name: str, value: Any, minimum: float | None = None, strict: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"synth.{name}={value!r}: must be a number") from None
    if not math.isfinite(v) or (minimum is not None and (v <= minimum if strict else v < minimum)):
        raise ConfigError(f"synth.{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return v


def _integer(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"synth.{name}={value!r}: must be an integer")
    if minimum is not None and value < minimum:
        raise ConfigError(f"synth.{name} must be >= {minimum}, got {value}")
    return int(value)


def _proportions(value: Any) -> str | dict[str, float] | None:
    if value is None or value == "uniform":
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"synth.proportions={value!r}: must be null (as the real defects), 'uniform' or a mapping class -> weight")
    out = {str(k): _number(f"proportions.{k}", v, minimum=0.0) for k, v in value.items()}
    if not sum(out.values()) > 0:
        raise ConfigError("synth.proportions: the weights must not all be zero")
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _now() -> int:
    return int(time.time() * 1000)
