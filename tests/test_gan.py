"""The GAN synth plugin: counts, labels, proportions, train-once reuse, determinism, logging, bad config.

One tiny GAN (32 px, width 4, a few steps) is trained once per module and reused by most tests,
which is itself the reuse rule at work. One SQLite store for the file (a copy of conftest's migrated
template); each test, or the module's trained GAN, gets its own experiment in it.
"""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

try:
    import mfexp_plugins  # noqa: F401
except ImportError:  # not installed in editable mode yet: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from mfexp_plugins import gan as gan_mod
from mfexp_plugins.fid import frechet_distance
from mfexp_plugins.gan import GanSynth, find_gan_run

from mfexp.errors import ConfigError, DataError

CLASSES = ["good", "scratch", "pit"]
TINY = {"steps": 4, "batch_size": 8, "width": 4, "latent_dim": 8, "fid_steps": 2, "progress": False}
CPU = torch.device("cpu")


def _data(n_good: int = 50, n_scratch: int = 30, n_pit: int = 20, size: int = 32, channels: int = 1):
    """100 images by default; each class has its own brightness so the GAN has something to learn."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [n_good, n_scratch, n_pit]).astype(np.int64)
    base = np.array([200, 60, 120])[labels][:, None, None, None]
    images = np.clip(base + rng.normal(0, 20, (len(labels), size, size, channels)), 0, 255).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="session")
def gan_store(tmp_path_factory, mlflow_store_factory) -> Path:
    """One migrated store (conftest's template copy) for the whole file; experiments isolate tests."""
    return mlflow_store_factory(tmp_path_factory.mktemp("gan_mlflow")).store_dir


def _new_experiment(root: Path) -> str:
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    name = f"gan-{uuid.uuid4().hex[:8]}"
    exp_id = mlflow.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@pytest.fixture()
def experiment(gan_store) -> str:
    return _new_experiment(gan_store)


@pytest.fixture(scope="module")
def trained(gan_store) -> dict:
    """One tiny GAN trained inside an active caller run, as the lead's train loop does."""
    exp_id = _new_experiment(gan_store)
    images, labels = _data()
    synth = GanSynth(r=0.1, **TINY)
    with mlflow.start_run() as caller:
        x, y = synth.generate(images, labels, CLASSES, "good", "fp", 0, CPU)
        still_active = mlflow.active_run().info.run_id
    key = synth.key(images[labels > 0], labels[labels > 0], CLASSES, ["scratch", "pit"], "fp")
    return {"uri": mlflow.get_tracking_uri(), "exp_id": exp_id, "x": x, "y": y, "key": key,
            "caller": caller.info.run_id, "still_active": still_active}


def _use(trained: dict) -> None:
    mlflow.set_tracking_uri(trained["uri"])
    mlflow.set_experiment(experiment_id=trained["exp_id"])


def _no_training(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("the GAN was trained again")

    monkeypatch.setattr(GanSynth, "_train", boom)


# ---------------------------------------------------------------- counts, labels, proportions


def test_count_is_r_times_real_and_labels_are_defect_classes(trained):
    x, y = trained["x"], trained["y"]
    assert len(x) == len(y) == 10  # 100 real, r = 0.1 -> 110 in all
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 1) and y.dtype == np.int64
    assert set(y.tolist()) <= {1, 2}  # never the good class
    assert np.bincount(y, minlength=3).tolist() == [0, 6, 4]  # proportional to 30 scratch : 20 pit


def test_reuse_loads_generator_instead_of_training(trained, monkeypatch):
    _use(trained)
    _no_training(monkeypatch)
    images, labels = _data()
    # r, proportions, noise_scale and the generation seed only change generation: same GAN.
    synth = GanSynth(r=0.37, proportions="uniform", noise_scale=1.5, **TINY)
    x, y = synth.generate(images, labels, CLASSES, "good", "fp", 7, CPU)
    assert len(x) == 37 and np.bincount(y, minlength=3).tolist() == [0, 19, 18]
    assert len(mlflow.search_runs([trained["exp_id"]], filter_string="tags.`mfexp.role` = 'gan'")) == 1


@pytest.mark.parametrize(
    "proportions, expected",
    [(None, [0, 3, 2]), ("uniform", [0, 3, 2]), ({"pit": 1}, [0, 0, 5]), ({"scratch": 3, "pit": 1}, [0, 4, 1])],
)
def test_class_proportions(trained, monkeypatch, proportions, expected):
    _use(trained)
    _no_training(monkeypatch)
    images, labels = _data()
    _, y = GanSynth(r=0.05, proportions=proportions, **TINY).generate(images, labels, CLASSES, "good", "fp", 0, CPU)
    assert np.bincount(y, minlength=3).tolist() == expected


def test_seeded_generation_is_deterministic(trained, monkeypatch):
    _use(trained)
    _no_training(monkeypatch)
    images, labels = _data()
    synth = GanSynth(r=0.1, **TINY)
    a = synth.generate(images, labels, CLASSES, "good", "fp", 0, CPU)
    b = synth.generate(images, labels, CLASSES, "good", "fp", 0, CPU)
    c = synth.generate(images, labels, CLASSES, "good", "fp", 1, CPU)
    assert np.array_equal(a[0], trained["x"]) and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_r_zero_gives_nothing_and_trains_nothing(experiment, monkeypatch):
    _no_training(monkeypatch)
    images, labels = _data()
    x, y = GanSynth(r=0.0, **TINY).generate(images, labels, CLASSES, "good", "fp", 0, CPU)
    assert x.shape == (0, 32, 32, 1) and y.shape == (0,)


def test_key_ignores_generation_knobs_but_not_training_ones():
    images, labels = _data()
    args = (images, labels, CLASSES, ["scratch", "pit"], "fp")
    base = GanSynth(**TINY).key(*args)
    assert GanSynth(r=0.5, proportions="uniform", noise_scale=2.0, **TINY).key(*args) == base
    assert GanSynth(**{**TINY, "steps": 5}).key(*args) != base
    assert GanSynth(**{**TINY, "mode_seeking": 0.0}).key(*args) != base
    assert GanSynth(**TINY).key(images, labels, CLASSES, ["scratch", "pit"], "other-fp") != base
    assert GanSynth(**TINY).key(images[1:], labels[1:], CLASSES, ["scratch", "pit"], "fp") != base  # other split


# ---------------------------------------------------------------- the GAN run


def test_gan_run_logs_losses_quality_counts_and_grids(trained, tmp_path):
    _use(trained)
    client = mlflow.MlflowClient()
    run = find_gan_run(client, trained["exp_id"], trained["key"])
    assert run is not None and run.info.status == "FINISHED"
    assert run.data.tags["mfexp.role"] == "gan" and run.data.tags["mfexp.requested_by"] == trained["caller"]
    for name in ("gan.g_loss", "gan.d_loss"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == list(range(TINY["steps"]))
        assert all(np.isfinite(m.value) for m in history)
    m = run.data.metrics
    assert np.isfinite(m["gan.fid"]) and np.isfinite(m["gan.fid_floor"]) and m["gan.fid_floor"] >= 0
    assert "penultimate" in run.data.params["gan.fid_features"]
    assert run.data.params["gan.count.scratch"] == "30" and run.data.params["gan.count.pit"] == "20"

    files = {f.path for d in ("generator", "samples", "quality") for f in client.list_artifacts(run.info.run_id, d)}
    assert files == {"generator/generator.pt", "samples/scratch.png", "samples/pit.png", "quality/gan_quality.png"}
    for name in ("samples/scratch.png", "quality/gan_quality.png"):
        path = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=name, dst_path=str(tmp_path)))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as im:
            im.verify()
        if name.startswith("samples/"):
            with Image.open(path) as im:
                assert im.size == (8 * 34 + 2, 8 * 34 + 2)  # 8 x 8 grid of 32 px with 2 px gaps


def test_caller_run_stays_active_and_points_at_the_gan(trained):
    _use(trained)
    assert trained["still_active"] == trained["caller"]
    caller = mlflow.get_run(trained["caller"])
    gan_run = find_gan_run(mlflow.MlflowClient(), trained["exp_id"], trained["key"])
    assert caller.data.tags[gan_mod.TAG_GAN_RUN] == gan_run.info.run_id
    assert caller.data.metrics["synth.count"] == 10 and caller.data.metrics["synth.count.pit"] == 4


def test_tiny_gan_trains_with_finite_losses_and_is_seeded():
    images, labels = _data(0, 12, 12, size=16, channels=3)
    synth = GanSynth(**TINY)
    logged: list = []
    net_a, losses = synth._train(images[labels > 0], labels[labels > 0] - 1, 2, CPU, logged.extend)
    net_b, _ = synth._train(images[labels > 0], labels[labels > 0] - 1, 2, CPU, lambda batch: None)
    assert len(losses["gan.g_loss"]) == TINY["steps"] and np.isfinite(losses["gan.g_loss"] + losses["gan.d_loss"]).all()
    assert len(logged) == 2 * TINY["steps"]
    for pa, pb in zip(net_a.state_dict().values(), net_b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_failed_training_ends_run_failed_and_is_never_reused(experiment, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(GanSynth, "_train", broken)
    images, labels = _data()
    with pytest.raises(RuntimeError, match="out of memory"):
        GanSynth(**TINY).generate(images, labels, CLASSES, "good", "fp", 0, CPU)
    runs = mlflow.search_runs([experiment])
    assert runs["status"].tolist() == ["FAILED"]
    key = GanSynth(**TINY).key(images[labels > 0], labels[labels > 0], CLASSES, ["scratch", "pit"], "fp")
    assert find_gan_run(mlflow.MlflowClient(), experiment, key) is None


def test_oldest_finished_run_wins(experiment):
    client = mlflow.MlflowClient()
    tags = {"mfexp.role": "gan", "mfexp.gan_key": "k"}
    ids = []
    for start, status in ((3000, "FINISHED"), (1000, "RUNNING"), (2000, "FINISHED")):
        run_id = client.create_run(experiment, start_time=start, tags=tags).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        ids.append(run_id)
    assert find_gan_run(client, experiment, "k").info.run_id == ids[2]


# ---------------------------------------------------------------- bad config fails early


@pytest.mark.parametrize(
    "knobs, match",
    [
        ({"r": -0.1}, "synth.r must be >= 0"),
        ({"r": "lots"}, "synth.r="),
        ({"classes": []}, "synth.classes"),
        ({"proportions": {"pit": 0}}, "synth.proportions"),
        ({"proportions": "skewed"}, "synth.proportions"),
        ({"steps": 0}, "synth.steps"),
        ({"noise_scale": 0}, "synth.noise_scale"),
        ({"wdith": 8}, "unknown key"),
    ],
)
def test_bad_knobs_fail_at_construction(knobs, match):
    with pytest.raises(ConfigError, match=match):
        GanSynth(**knobs)


@pytest.mark.parametrize(
    "knobs, data, error, match",
    [
        ({"classes": ["dent"]}, {}, ConfigError, "synth.classes"),
        ({"classes": ["pit"]}, {"n_pit": 0}, DataError, "no training images"),
        ({}, {"n_scratch": 0, "n_pit": 0}, DataError, "no training images"),
        ({}, {"size": 48}, ConfigError, "data.image_size=48"),
        ({"proportions": {"good": 1}}, {}, ConfigError, "synth.proportions"),
    ],
)
def test_bad_data_or_classes_fail_before_training(experiment, monkeypatch, knobs, data, error, match):
    _no_training(monkeypatch)
    images, labels = _data(**data)
    with pytest.raises(error, match=match):
        GanSynth(**{**TINY, **knobs}).generate(images, labels, CLASSES, "good", "fp", 0, CPU)
    assert mlflow.search_runs([experiment]).empty  # nothing half-made


def test_no_good_class_means_every_class(experiment):
    images, labels = _data(10, 10, 10, size=16)
    _, y = GanSynth(r=0.3, **TINY).generate(images, labels, CLASSES, None, "fp", 0, CPU)
    assert np.bincount(y, minlength=3).tolist() == [3, 3, 3]


def test_frechet_distance_is_zero_for_identical_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + 2.0) == pytest.approx(16.0, rel=1e-6)  # ||mu shift||^2 = 4 x 2^2
