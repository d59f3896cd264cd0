"""The GAN's MLflow side: finding a trained generator by its key, loading it, and small logging helpers."""
from __future__ import annotations

import tempfile
import time

import mlflow
import torch
from mlflow.entities import Run

from mfexp import keys

from .networks import Generator

GENERATOR_ARTIFACT = "generator/generator.pt"


def find_gan_run(client: mlflow.MlflowClient, experiment_id: str, key: str) -> Run | None:
    """The oldest FINISHED GAN run with this key (ties by run id), so every process picks the same one."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{keys.TAG_ROLE}` = 'gan' and tags.`{keys.TAG_GAN_KEY}` = '{key}' and attributes.status = 'FINISHED'",
    )
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id), default=None)


def experiment_id() -> str:
    active = mlflow.active_run()
    if active is not None:
        return active.info.experiment_id
    # No active run: the experiment chosen with mlflow.set_experiment (MLflow's "Default" otherwise).
    from mlflow.tracking.fluent import _get_experiment_id

    return _get_experiment_id() or "0"


def load_generator(run_id: str, device: torch.device) -> tuple[Generator, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=GENERATOR_ARTIFACT, dst_path=tmp)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    arch, names = ckpt["arch"], list(ckpt["classes"])
    net = Generator(arch["latent_dim"], len(names), arch["width"], arch["image_size"], arch["channels"])
    net.load_state_dict(ckpt["state_dict"])
    return net.to(device).eval(), names


def now() -> int:
    return int(time.time() * 1000)
