"""`GanSynth`, the ``synth=gan`` plugin: which classes to make and how many, the GAN key, and the GAN's own MLflow run.

``generate`` returns ``round(r x N)`` labelled uint8 images for the training split only; the caller
blends them in before augmentation. The GAN itself is trained at most once per key and kept as an
MLflow run of its own (tag ``mfexp.role=gan``): the key hashes the training images, the dataset
fingerprint and every setting that changes the trained weights, and none of those that only change
generation (``r``, ``proportions``, ``noise_scale``, the generation seed), so a sweep over ``r``
trains one GAN. See docs/synthetic.md.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.entities import Metric, RunStatus

from mfexp import keys
from mfexp.errors import ConfigError, DataError
from mfexp.names import MAX_PARAM_VALUE, key_names
from mfexp_plugins import fid

from . import quality, store
from .networks import MBSTD, TRANSLATE, Generator, sample
from .settings import GanSettings
from .training import BETAS, train

GAN_VERSION = 1  # bump when the architecture or training changes: old generators stop matching
SUPPORTED_SIZES = (16, 32, 64, 128)  # 16 px only for fast tests; the networks are sized for 32-128


class GanSynth:
    """The ``synth`` plugin: train (or reuse) a conditional GAN, then sample ``round(r x N)`` labelled images."""

    def __init__(self, **settings: Any) -> None:
        self.settings = GanSettings.of(settings)

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
        n_out = round(self.settings.r * len(images))
        h, w, c = images.shape[1:]
        if n_out == 0:
            return np.zeros((0, h, w, c), np.uint8), np.zeros((0,), np.int64)
        chosen = self._chosen_classes(labels, classes, good_class)
        counts = self._class_counts(n_out, chosen, labels, classes)
        device = torch.device(device)

        mask = np.isin(labels, [classes.index(k) for k in chosen])
        key = self.key(images[mask], labels[mask], classes, chosen, fingerprint)
        client = mlflow.MlflowClient()
        exp_id = store.experiment_id()
        run = store.find_gan_run(client, exp_id, key)
        if run is None:
            self._train_run(client, exp_id, key, images, labels, classes, chosen, fingerprint, device)
            # Two processes may have trained the same key at once; everyone uses the oldest FINISHED one.
            run = store.find_gan_run(client, exp_id, key)
            assert run is not None, "the GAN run just finished but cannot be found"
        gen_net, gen_classes = store.load_generator(run.info.run_id, device)

        out_x, out_y = [], []
        rng = torch.Generator().manual_seed(int(seed))
        for name, k in counts.items():
            out_x.append(sample(gen_net, gen_classes.index(name), k, self.settings.latent_dim, self.settings.noise_scale, rng, device))
            out_y.append(np.full(k, classes.index(name), np.int64))
        self._annotate_caller(client, run.info.run_id, counts, key_names(classes))
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
            **self.settings.training(),
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ choosing what to make

    def _chosen_classes(self, labels: np.ndarray, classes: list[str], good_class: str | None) -> list[str]:
        present = set(np.unique(labels).tolist())
        if good_class is not None and good_class not in classes:
            raise ConfigError(f"data.good_class={good_class}: not one of the classes {classes}")
        if self.settings.classes is not None:
            unknown = [k for k in self.settings.classes if k not in classes]
            if unknown:
                raise ConfigError(f"synth.classes: {unknown} not among the classes {classes}")
            empty = [k for k in self.settings.classes if classes.index(k) not in present]
            if empty:
                raise DataError(f"synth.classes: no training images in {empty}; the GAN has nothing to learn from")
            return list(dict.fromkeys(self.settings.classes))
        chosen = [k for i, k in enumerate(classes) if k != good_class and i in present]
        if not chosen:
            raise DataError(f"synth: no training images outside data.good_class={good_class}; nothing for the GAN to learn")
        return chosen

    def _class_counts(self, n: int, chosen: list[str], labels: np.ndarray, classes: list[str]) -> dict[str, int]:
        """Split n across the chosen classes by weight; largest remainders so the total is exactly n."""
        if self.settings.proportions is None:
            real = np.bincount(labels, minlength=len(classes))
            weights = np.array([real[classes.index(k)] for k in chosen], float)
        elif self.settings.proportions == "uniform":
            weights = np.ones(len(chosen))
        else:
            stray = [k for k in self.settings.proportions if k not in chosen]
            if stray:
                raise ConfigError(f"synth.proportions: {stray} not among the GAN's classes {chosen}")
            weights = np.array([self.settings.proportions.get(k, 0.0) for k in chosen], float)
        share = n * weights / weights.sum()
        counts = np.floor(share).astype(int)
        order = np.argsort(-(share - counts), kind="stable")
        counts[order[: n - counts.sum()]] += 1
        return {k: int(m) for k, m in zip(chosen, counts)}

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
        idx, safe = [classes.index(k) for k in chosen], key_names(classes)  # class names as MLflow keys take them
        mask = np.isin(labels, idx)
        to_gan = np.full(len(classes), -1, np.int64)
        to_gan[idx] = np.arange(len(idx))  # the GAN's class i is chosen[i]
        x, y = images[mask], to_gan[labels[mask]]
        tags = {keys.TAG_ROLE: "gan", keys.TAG_GAN_KEY: key, keys.TAG_FINGERPRINT: fingerprint}
        caller = mlflow.active_run()
        if caller is not None:
            tags[keys.TAG_REQUESTED_BY] = caller.info.run_id
        run_id = client.create_run(exp_id, run_name=f"gan-{key[:8]}", tags=tags).info.run_id
        try:
            params = {f"gan.{k}": v for k, v in self.settings.training().items()}
            params.update({
                "gan.version": GAN_VERSION,
                "gan.image_size": x.shape[1],
                "gan.channels": x.shape[3],
                "gan.classes": ",".join(chosen)[:MAX_PARAM_VALUE],
                "gan.n_real": len(x),
                "gan.device": str(device),
                "gan.fid_features": fid.FEATURE_SPACE,
                "gan.fid_steps": self.settings.fid_steps,
                **{f"gan.count.{safe[k]}": int((y == i).sum()) for i, k in enumerate(chosen)},
            })
            for name, value in params.items():
                client.log_param(run_id, name, value)
            t0 = time.perf_counter()
            net, losses = self._train(x, y, len(chosen), device, lambda batch: client.log_batch(run_id, metrics=batch))
            train_s = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                (out / "generator").mkdir()
                arch = {"latent_dim": self.settings.latent_dim, "width": self.settings.width, "image_size": x.shape[1], "channels": x.shape[3]}
                torch.save({"state_dict": net.state_dict(), "arch": arch, "classes": chosen}, out / store.GENERATOR_ARTIFACT)
                (out / "samples").mkdir()
                grid_rng = torch.Generator().manual_seed(self.settings.train_seed)
                for i, k in enumerate(chosen):
                    grid = sample(net, i, 64, self.settings.latent_dim, 1.0, grid_rng, device)
                    quality.save_grid(grid, out / "samples" / f"{safe[k]}.png")
                scores = quality.frechet_distances(self.settings, net, x, y, images, labels, device)
                (out / "quality").mkdir()
                quality.save_quality_figure(losses, scores, out / "quality" / "gan_quality.png")
                client.log_artifacts(run_id, tmp)
            metrics = {"gan.train_seconds": train_s, **scores}
            client.log_batch(run_id, metrics=[Metric(k, float(v), store.now(), 0) for k, v in metrics.items()])
        except BaseException:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run_id

    def _train(
        self, x: np.ndarray, y: np.ndarray, n_classes: int, device: torch.device, log: Callable[[list[Metric]], None]
    ) -> tuple[Generator, dict[str, list[float]]]:
        return train(self.settings, x, y, n_classes, device, log)

    def _annotate_caller(self, client: mlflow.MlflowClient, gan_run_id: str, counts: dict[str, int],
                         safe: dict[str, str]) -> None:
        """Record on the caller's run which generator made its synthetic images, and how many per class."""
        caller = mlflow.active_run()
        if caller is None:
            return
        client.set_tag(caller.info.run_id, keys.TAG_GAN_RUN, gan_run_id)
        metrics = {f"synth.count.{safe[k]}": n for k, n in counts.items()} | {"synth.count": sum(counts.values())}
        client.log_batch(caller.info.run_id, metrics=[Metric(k, float(v), store.now(), 0) for k, v in metrics.items()])


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
