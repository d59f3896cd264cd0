"""Foundation units (issue 2): folder data, demo data, the model factory and the train loop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from mfexp import data as data_mod
from mfexp.config import TrainerConfig
from mfexp.demo import make_demo
from mfexp.errors import ConfigError, DataError
from mfexp.loader import make_loader
from mfexp.model import Probabilities, build_model
from mfexp.policy import Policy
from mfexp.train import fit, resolve_device


def write_tree(root: Path, counts: dict[str, int], *, split: str = "train", mode: str = "L", size=(20, 20),
               start: int = 0) -> Path:
    """PNG class folders; every image is unique (its pixels encode class and index)."""
    for ci, (cls, n) in enumerate(sorted(counts.items())):
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            rng = np.random.default_rng([ci, i, len(split)])
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{cls}_{i:03d}.png")
    return root


def load(root: Path, **kw) -> data_mod.Splits:
    kw.setdefault("image_size", 16)
    return data_mod.load_splits.__wrapped__(str(root), **kw)  # bypass the per-process memo: files change here


def _rows(s: data_mod.ImageSet) -> set[bytes]:
    return {img.tobytes() for img in s.images}


# ---------------------------------------------------------------------------- folder data
def test_stratified_val_and_test_without_test_folder(tmp_path):
    write_tree(tmp_path, {"good": 40, "bad": 20})
    s = load(tmp_path, val_fraction=0.2, test_fraction=0.25, seed=3)
    assert s.classes == ("bad", "good")  # sorted folder names, index = label
    assert s.test.counts() == {"bad": 5, "good": 10}  # 25 % of each class
    assert s.val.counts() == {"bad": 3, "good": 6}  # 20 % of what is left, per class
    assert s.train.counts() == {"bad": 12, "good": 24}
    parts = [_rows(s.train), _rows(s.val), _rows(s.test)]
    assert sum(map(len, parts)) == 60 and len(set.union(*parts)) == 60  # disjoint, nothing lost
    again = load(tmp_path, val_fraction=0.2, test_fraction=0.25, seed=3)
    assert _rows(again.val) == _rows(s.val)  # the split seed fixes the split
    assert _rows(load(tmp_path, val_fraction=0.2, test_fraction=0.25, seed=4).val) != _rows(s.val)


def test_test_folder_is_the_test_split(tmp_path):
    write_tree(tmp_path, {"a": 10, "b": 10})
    write_tree(tmp_path, {"a": 3, "b": 2}, split="test")
    s = load(tmp_path, val_fraction=0.2)
    assert s.test.counts() == {"a": 3, "b": 2}
    assert s.val.counts() == {"a": 2, "b": 2} and s.train.counts() == {"a": 8, "b": 8}


def test_test_folder_with_unknown_class_is_rejected(tmp_path):
    write_tree(tmp_path, {"a": 4, "b": 4})
    write_tree(tmp_path, {"c": 2}, split="test")
    with pytest.raises(DataError, match=r"\['c'\].*do not exist in train"):
        load(tmp_path)


@pytest.mark.parametrize("modes, expected", [(("L", "L"), 1), (("RGB", "RGB"), 3), (("L", "RGB"), 3)])
def test_grayscale_or_rgb_is_detected(tmp_path, modes, expected):
    write_tree(tmp_path, {"a": 5}, mode=modes[0])
    write_tree(tmp_path, {"b": 5}, mode=modes[1])
    s = load(tmp_path)
    assert s.train.images.shape[-1] == expected and s.train.images.dtype == np.uint8


def test_channels_can_be_forced(tmp_path):
    write_tree(tmp_path, {"a": 5, "b": 5}, mode="L")
    assert load(tmp_path, channels=3).train.images.shape[-1] == 3
    with pytest.raises(ConfigError, match="data.channels=2"):
        load(tmp_path, channels=2)


def test_any_size_is_resized(tmp_path):
    write_tree(tmp_path, {"a": 5}, size=(40, 25))
    write_tree(tmp_path, {"b": 5}, size=(12, 12))
    s = load(tmp_path, image_size=24)
    for part in (s.train, s.val, s.test):
        assert part.images.shape[1:] == (24, 24, 1)


def test_other_files_are_ignored(tmp_path):
    write_tree(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / ".hidden").mkdir()
    assert len(load(tmp_path).classes) == 2


def test_fingerprint_tracks_content_names_and_size(tmp_path):
    write_tree(tmp_path, {"a": 5, "b": 5})
    fp = load(tmp_path).fingerprint
    assert len(fp) == 16 and load(tmp_path).fingerprint == fp  # stable
    assert load(tmp_path, image_size=20).fingerprint != fp  # what the model sees changed
    victim = tmp_path / "train" / "a" / "a_000.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(victim)
    changed = load(tmp_path).fingerprint
    assert changed != fp  # one file's bytes
    victim.rename(tmp_path / "train" / "b" / "a_000.png")
    assert load(tmp_path).fingerprint not in (fp, changed)  # same bytes, other label


def test_good_class(tmp_path):
    write_tree(tmp_path, {"good": 6, "dent": 4})
    assert load(tmp_path, good_class="good").good_class == "good"
    assert load(tmp_path).good_class is None
    with pytest.raises(ConfigError, match="data.good_class=ok: not one of the classes"):
        load(tmp_path, good_class="ok")


def test_too_few_images_to_split(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(DataError, match="class 'a' has 2 image"):  # tests/test_intake.py: the rule for small classes
        load(tmp_path)
    write_tree(tmp_path, {"a": 30, "b": 30})
    with pytest.raises(DataError, match="too few images"):
        load(tmp_path, test_fraction=0.99)


def test_truncated_image_is_named(tmp_path):
    write_tree(tmp_path, {"a": 5, "b": 5})
    good = (tmp_path / "train" / "b" / "b_001.png").read_bytes()
    victim = tmp_path / "train" / "b" / "b_002.png"
    victim.write_bytes(good[: len(good) // 2])  # valid header, cut-off pixel data
    with pytest.raises(DataError, match=f"{victim}: unreadable or corrupt image"):
        load(tmp_path)


# ---------------------------------------------------------------------------- demo data
def test_demo_is_the_default_and_is_deterministic(tmp_path, compose_cfg):
    cfg = compose_cfg()
    assert cfg.data.kind == "demo" and cfg.data.good_class == "good"
    counts = {"good": 6, "scratch": 3, "pit": 3}
    a = make_demo(tmp_path / "a", counts, image_size=16, seed=1)
    b = make_demo(tmp_path / "b", counts, image_size=16, seed=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 12 and files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert make_demo(tmp_path / "a", counts, image_size=16, seed=1) == a  # cached, not rewritten
    s = load(a, good_class="good", val_fraction=0.25)
    assert s.classes == ("good", "pit", "scratch") and s.train.images.shape[-1] == 1
    assert s.test.counts() == {"good": 1, "pit": 1, "scratch": 1}  # test/ folder of the demo tree


def test_a_short_training_on_the_demo_beats_the_majority_class(compose_cfg):
    """The demo is learnable: the default model, a few epochs, no policy, finds the defects.

    The demo before generator v3 failed this: v1's model predicted `good` for every part.
    """
    from mfexp.job import evaluate, load_data, new_model, seed_everything, train
    from mfexp.metrics import classification_metrics

    cfg = compose_cfg("trainer.epochs=8", "trainer.refit=false", "trainer.progress=false", "trainer.num_workers=0")
    splits = load_data(cfg.data)
    seed_everything(cfg.trainer)
    trained = train(cfg, new_model(cfg, splits.train), splits.train, splits.val, Policy())
    prob, y = evaluate(trained, splits.test, cfg.trainer.batch_size)
    m = classification_metrics(y, prob, splits.classes, prefix="")
    majority = np.bincount(y).max() / len(y)  # 0.6: what always answering `good` scores
    assert m["accuracy"] >= majority + 0.2 and m["macro_f1"] >= 0.6, m
    assert min(m[f"recall/{c}"] for c in splits.classes) >= 0.4, m  # every defect kind is found


# ---------------------------------------------------------------------------- model
def _model(**kw):
    kw = {"name": "resnet18", "in_chans": 1, "num_classes": 3, "image_size": 32, "mean": np.array([0.5]),
          "std": np.array([0.25]), **kw}
    return build_model(**kw)


def test_model_defaults_are_offline(compose_cfg):
    m = compose_cfg().model
    assert m.name == "resnet18" and m.pretrained is False and m.checkpoint is None


def test_smaller_stems_keep_resolution():
    plain, nopool, small = _model(), _model(stem="nopool"), _model(stem="small")
    conv = small.backbone.conv1
    assert (conv.kernel_size, conv.stride) == ((3, 3), (1, 1)) and isinstance(small.backbone.maxpool, torch.nn.Identity)
    x = torch.rand(2, 1, 32, 32)
    fmap = lambda m: m.backbone.forward_features(m.normalize(x)).shape[-1]  # noqa: E731
    assert fmap(plain) == 1 and fmap(nopool) == 2 and fmap(small) == 4
    assert isinstance(nopool.backbone.maxpool, torch.nn.Identity) and nopool.backbone.conv1.stride == (2, 2)
    assert small(x).shape == (2, 3)
    probs = Probabilities(small).eval()(x)
    assert torch.allclose(probs.sum(1), torch.ones(2))


def test_other_timm_models_and_bad_names():
    assert _model(name="test_resnet").backbone.__class__.__name__ == "ResNet"
    with pytest.raises(ConfigError, match="model.name=resnet_nonexistent: not a timm model"):
        _model(name="resnet_nonexistent")
    with pytest.raises(ConfigError, match="data.image_size=16: too small for resnet18"):
        _model(image_size=16)
    assert _model(image_size=16, stem="small")(torch.rand(2, 1, 16, 16)).shape == (2, 3)
    with pytest.raises(ConfigError, match="model.stem=tiny: use one of stock, nopool, small"):
        _model(stem="tiny")


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_local_checkpoint_is_loaded(tmp_path, fmt):
    import timm

    torch.manual_seed(123)
    source = timm.create_model("resnet18", in_chans=1, num_classes=10)  # other head: skipped on load
    path = tmp_path / f"weights.{fmt}"
    if fmt == "pth":
        torch.save({"state_dict": source.state_dict()}, path)
    else:
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    torch.manual_seed(0)
    loaded = _model(checkpoint=str(path)).backbone.state_dict()
    ref = source.state_dict()
    assert torch.equal(loaded["layer4.1.conv2.weight"], ref["layer4.1.conv2.weight"])
    assert torch.equal(loaded["bn1.running_mean"], ref["bn1.running_mean"])
    assert loaded["fc.weight"].shape == (3, 512)
    with pytest.raises(ConfigError, match="model.checkpoint=.*does not exist"):
        _model(checkpoint=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="model.checkpoint=.*cannot be read"):
        _model(checkpoint=str(tmp_path / "junk.pth"))


# ---------------------------------------------------------------------------- train loop
def _toy_loaders(n: int = 24, size: int = 8):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = (rng.integers(0, 60, (n, size, size, 1)) + 150 * labels[:, None, None, None]).astype(np.uint8)
    s = data_mod.ImageSet(images, labels.astype(np.int64), ("a", "b"))
    return make_loader(s, 8, train=True, seed=0), make_loader(s, 16, train=False)


def _trainer(**kw):
    return OmegaConf.structured(TrainerConfig(**{"progress": False, **kw}))


def _linear(size: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size * size, 2))  # no batch norm: lr=0 freezes it


def test_fit_learns_and_reports_every_epoch():
    train, val = _toy_loaders()
    seen = []
    hist = fit(_linear(), train, val, Policy(), 2, _trainer(epochs=4, lr=0.2), torch.device("cpu"), False,
               on_epoch=lambda e, ms: seen.append((e, sorted(ms))))
    assert seen == [(e, ["train_loss", "val_accuracy", "val_loss"]) for e in range(4)]
    assert hist.val_loss[-1] < hist.val_loss[0] and hist.val_accuracy[-1] == 1.0
    assert hist.best_val_loss == min(hist.val_loss)


def test_early_stopping_on_val_loss():
    train, val = _toy_loaders()
    t = _trainer(epochs=10, lr=0.0, schedule="constant", early_stopping_patience=2, checkpoint="best")
    hist = fit(_linear(), train, val, Policy(), 2, t, torch.device("cpu"), False)
    assert len(hist.val_loss) == 3 and hist.best_epoch == 0  # no improvement for 2 epochs: stop
    hist = fit(_linear(), train, val, Policy(), 2, _trainer(epochs=3, lr=0.0, schedule="constant"), torch.device("cpu"), False)
    assert len(hist.val_loss) == 3  # patience 0: off


def test_best_epoch_weights_are_kept():
    train, val = _toy_loaders()
    model = _linear()
    t = _trainer(epochs=4, lr=3.0, optimizer="sgd", schedule="constant", checkpoint="best")  # the last epoch is worse
    hist = fit(model, train, val, Policy(), 2, t, torch.device("cpu"), False)
    assert hist.best_epoch < 3 and hist.val_loss[-1] > hist.best_val_loss
    from mfexp.train import predict

    prob, y = predict(model, val, torch.device("cpu"))
    nll = float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(prob)), torch.from_numpy(y)))
    assert nll == pytest.approx(hist.best_val_loss, rel=1e-5)


def test_last_checkpoint_keeps_the_final_weights():
    from mfexp.train import predict

    train, val = _toy_loaders()
    model = _linear()
    t = _trainer(epochs=4, lr=3.0, optimizer="sgd", schedule="constant")  # the default checkpoint: last
    hist = fit(model, train, val, Policy(), 2, t, torch.device("cpu"), False)
    assert hist.best_epoch == 3 and hist.best_val_loss == hist.val_loss[-1] > min(hist.val_loss)
    prob, y = predict(model, val, torch.device("cpu"))
    nll = float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(prob)), torch.from_numpy(y)))
    assert nll == pytest.approx(hist.val_loss[-1], rel=1e-5)


@pytest.mark.parametrize("checkpoint", ["last", "best"])
def test_refit_trains_again_on_train_and_validation(monkeypatch, compose_cfg, checkpoint):
    """Validation picks the epochs; the model kept is retrained from the same start on both splits."""
    from mfexp import job

    calls = []

    def recording_fit(model, train_loader, val_loader, policy, k, t, *args, **kw):
        calls.append((len(train_loader.dataset), t.epochs, {n: p.detach().clone() for n, p in model.state_dict().items()}))
        return fit(model, train_loader, val_loader, policy, k, t, *args, **kw)

    monkeypatch.setattr(job, "fit", recording_fit)
    from conftest import TINY_DEMO, TINY_TRAIN

    cfg = compose_cfg(*TINY_DEMO, *TINY_TRAIN, "trainer.epochs=3", f"trainer.checkpoint={checkpoint}")
    assert cfg.trainer.refit is True  # the default
    splits = job.load_data(cfg.data)
    job.seed_everything(cfg.trainer)
    trained = job.train(cfg, job.new_model(cfg, splits.train), splits.train, splits.val, Policy())
    (n1, e1, start1), (n2, e2, start2) = calls
    assert (n1, n2) == (len(splits.train), len(splits.train) + len(splits.val))
    assert e1 == 3 and e2 == trained.history.best_epoch + 1 == trained.refit_epochs
    assert all(torch.equal(start1[k], start2[k]) for k in start1)  # the same initial weights
    assert len(trained.history.val_loss) == 3  # the history (and objective) is the first fit's


def test_progress_bar_goes_to_stderr_and_not_into_a_file(capfd):
    train, val = _toy_loaders()
    fit(_linear(), train, val, Policy(), 2, _trainer(epochs=1, progress="bar"), torch.device("cpu"), False)
    assert "epoch 1/1" in capfd.readouterr().err
    fit(_linear(), train, val, Policy(), 2, _trainer(epochs=1, progress="auto"), torch.device("cpu"), False)
    assert capfd.readouterr().err == ""  # captured stderr is no terminal: no bar (tests/test_progress.py: the lines)


def test_device_resolution():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="trainer.device=gpu0: not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_optimizer_and_schedule_choices():
    from mfexp.train import make_optimizer

    opt, sched = make_optimizer(_linear(), _trainer(), 10)
    assert isinstance(opt, torch.optim.AdamW) and isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05]  # every parameter decays, norms and biases too
    opt, _ = make_optimizer(_linear(), _trainer(decay_norms=False), 10)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # biases exempt
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]
    with pytest.raises(ConfigError, match="trainer.optimizer=adam"):
        make_optimizer(_linear(), _trainer(optimizer="adam"), 10)
