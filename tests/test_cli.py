"""The command line (issue 2): config composition, bad input, crashes, and the plugin mechanism.

Bad input goes through the real entry point (``mfexp.__main__.main``, Hydra and all) in-process,
which is seconds instead of a process start each; a few subprocess tests pin the contract of the
real process: exit status, one line on stderr, and no MLflow run left RUNNING.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, TINY_DEMO, TINY_TRAIN, patch_fit
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from PIL import Image

from mfexp import tracking

GROUPS = ("data", "model", "augment", "synth", "trainer", "tracking")


def _tree(root: Path, classes=("a", "b"), n: int = 4) -> Path:
    for c in classes:
        d = root / "train" / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 20), dtype=np.uint8)).save(d / f"{i}.png")
    return root


# ---------------------------------------------------------------------------- composition
def test_cfg_job_prints_the_composed_config(cli):
    p = cli("--cfg", "job", "trainer.epochs=3", "model.name=resnet34", "data=folder", "data.root=/some/images")
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert set(GROUPS) <= set(cfg)  # the six groups of issue 2 (others may add more)
    assert cfg["trainer"]["epochs"] == 3 and cfg["model"]["name"] == "resnet34" and cfg["model"]["pretrained"] is False
    assert cfg["data"]["kind"] == "folder" and cfg["data"]["root"] == "/some/images"


def test_type_errors_fail_at_composition(cli, tmp_path):
    p = cli("trainer.epochs=ten")
    assert p.returncode == 1
    assert "trainer.epochs" in p.stderr and "could not be converted to Integer" in p.stderr
    assert not (tmp_path / "mlruns").exists()  # nothing ran


@pytest.mark.parametrize("override", ["trainer.epochs=ten", "trainer.lr=fast", "trainer.refit=maybe",
                                      "data.demo_per_class.good=many", "trainer.no_such_key=1", "model=no_such_model"])
def test_type_and_key_errors_are_caught_before_anything_runs(compose_cfg, override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg(override)


def _override_value(v) -> str:
    """A value in Hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(_override_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_override_value(i)}" for k, i in v.items()) + "}"
    assert isinstance(v, str), v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_every_value_is_overridable(compose_cfg):
    default = OmegaConf.to_container(compose_cfg())
    flat = tracking.flatten(default)
    same = compose_cfg(*(f"{k}={_override_value(v)}" for k, v in flat.items()))
    assert OmegaConf.to_container(same) == default  # every leaf is addressable by its dotted key
    changed = compose_cfg("data.image_size=48", "data.demo_per_class.good=7", "model.drop_rate=0.25",
                          "augment.mode=trivial", "synth.r=0.5", "trainer.early_stopping_patience=3",
                          "tracking.experiment=other", "+tracking.tags.owner=me", "data.channels=3")
    assert (changed.data.image_size, changed.data.demo_per_class.good, changed.model.drop_rate) == (48, 7, 0.25)
    assert (changed.augment.mode, changed.synth.r, changed.trainer.early_stopping_patience) == ("trivial", 0.5, 3)
    assert (changed.tracking.experiment, changed.tracking.tags.owner, changed.data.channels) == ("other", "me", 3)


# ---------------------------------------------------------------------------- bad input
def _empty(tmp: Path) -> Path:
    (tmp / "d").mkdir()
    return tmp / "d"


def _empty_train(tmp: Path) -> Path:
    (tmp / "d" / "train").mkdir(parents=True)
    return tmp / "d"


def _class_without_images(tmp: Path) -> Path:
    root = _tree(tmp / "d")
    (root / "train" / "c").mkdir()
    (root / "train" / "c" / "readme.txt").write_text("no images here")
    return root


def _corrupt(tmp: Path) -> Path:
    root = _tree(tmp / "d")
    (root / "train" / "b" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root


BAD_INPUT = {
    # name: (make data root or None for demo data, extra overrides, expected message after "mfexp: error: ")
    "unknown_model": (None, ["model.name=resnet_nonexistent"], r"model\.name=resnet_nonexistent: not a timm model"),
    "root_unset": (None, ["data=folder"], r"data\.root is not set"),
    "root_missing": (lambda t: t / "nowhere", [], r"data\.root=.*/nowhere: folder does not exist"),
    "root_empty": (_empty, [], r"data\.root=.*/d: expected class folders under .*/d/train"),
    "train_empty": (_empty_train, [], r".*/d/train: found 0 class folder\(s\) \[\]; need at least two classes"),
    "class_without_images": (_class_without_images, [], r".*/d/train/c: class folder holds no images"),
    "corrupt_image": (_corrupt, [], r".*/d/train/b/2\.png: unreadable or corrupt image"),
    "one_class": (lambda t: _tree(t / "d", classes=("only",)), [], r".*/d/train: found 1 class folder\(s\) \['only'\]; need at least two"),
    "epochs_zero": (None, ["trainer.epochs=0"], r"trainer\.epochs=0: must be a positive integer"),
    "epochs_negative": (None, ["trainer.epochs=-2"], r"trainer\.epochs=-2: must be a positive integer"),
    "batch_zero": (None, ["trainer.batch_size=0"], r"trainer\.batch_size=0: must be a positive integer"),
    "bad_checkpoint": (None, ["trainer.checkpoint=first"], r"trainer\.checkpoint=first: use last or best"),
    "bad_stem": (None, ["model.stem=tiny"], r"model\.stem=tiny: use one of stock, nopool, small"),
    "image_too_small_for_model": (None, ["model.stem=stock"], r"data\.image_size=16: too small for resnet18 \(downsamples 32x\)"),
    "image_too_small": (None, ["data.image_size=4"], r"data\.image_size=4: must be at least 8 pixels"),
    "bad_device": (None, ["trainer.device=gpu0"], r"trainer\.device=gpu0: not a device"),
    "bad_magnitude": (None, ["augment=policy", "augment.techniques.rotate.m=1.5"], r"augment technique '[Rr]otate'.*m=1\.5 is outside \[0, 1\]"),
}


def _bad_args(tmp_path: Path, case: str, store) -> list[str]:
    make, extra, _ = BAD_INPUT[case]
    data = [*TINY_DEMO] if make is None else ["data=folder", f"data.root={make(tmp_path)}"]
    if extra[:1] == ["data=folder"]:
        data = []
    return [*data, *TINY_TRAIN, *store.overrides, *extra]


def call_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``python -m mfexp ARGS`` through the real entry point, in this process."""
    from mfexp.__main__ import main

    monkeypatch.setattr(sys, "argv", ["mfexp", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_one_line_and_exit_2_before_training(case, tmp_path, mlflow_store, monkeypatch, capsys):
    def no_training(*a, **k):
        raise AssertionError("training started")

    patch_fit(monkeypatch, no_training)
    monkeypatch.chdir(tmp_path)  # Hydra's outputs/ folder
    code, _, err = call_main(monkeypatch, capsys, *_bad_args(tmp_path, case, mlflow_store))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("mfexp: error: ")
    assert re.fullmatch(BAD_INPUT[case][2] + ".*", lines[0][len("mfexp: error: "):]), lines[0]
    assert mlflow_store.runs() == []  # failed before any run was opened


def test_bad_input_real_process(tmp_path, mlflow_store, cli):
    p = cli(*_bad_args(tmp_path, "corrupt_image", mlflow_store))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mfexp: error: {tmp_path / 'd/train/b/2.png'}: unreadable or corrupt image ("), p.stderr


# ---------------------------------------------------------------------------- crashes
CRASHING_POLICY = '''
from mfexp.policy import Policy

class CrashingPolicy(Policy):
    """Trains one epoch normally, then fails inside the train loop like a real bug would."""
    calls = 0

    def mix_batch(self, x, y, num_classes, generator):
        CrashingPolicy.calls += 1
        if CrashingPolicy.calls > 2:
            raise RuntimeError("simulated crash inside the train loop")
        return super().mix_batch(x, y, num_classes, generator)
'''


def test_crash_during_training_marks_the_run_failed(tmp_path, mlflow_store, cli):
    (tmp_path / "crash_helper.py").write_text(CRASHING_POLICY)
    p = cli(*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides, "trainer.epochs=3", "augment._target_=crash_helper.CrashingPolicy",
            env={"PYTHONPATH": str(tmp_path)})
    assert p.returncode == 1 and "simulated crash inside the train loop" in p.stderr
    (r,) = mlflow_store.runs()
    assert r.info.status == "FAILED" and r.info.end_time is not None
    hist = mlflow_store.client().get_metric_history(r.info.run_id, "val_loss")
    assert [m.step for m in hist] == [1]  # epoch 1 finished and was logged, epoch 2 crashed


def test_sigterm_during_training_marks_the_run_killed(mlflow_store, compose_cfg, monkeypatch):
    """``kill PID`` (a scheduler, a launcher giving up) mid-training: the run ends KILLED, never RUNNING."""
    import os

    from mfexp.run import run

    def terminated_fit(*args, on_epoch=None, **kwargs):
        (on_epoch or args[8])(0, {"train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5})
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in here
        raise AssertionError("SIGTERM was not turned into an exception")

    patch_fit(monkeypatch, terminated_fit)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(BaseException) as exc_info:
        run(compose_cfg(*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides))
    assert not isinstance(exc_info.value, AssertionError)
    assert signal.getsignal(signal.SIGTERM) is before  # the run's handler is gone again
    (r,) = mlflow_store.runs()
    assert r.info.status == "KILLED" and r.info.end_time is not None


# ---------------------------------------------------------------------------- plugins
EXAMPLE_PLUGIN = ROOT / "tests" / "example_plugin"
PLUGIN_OPTIONS = ["model=tiny_resnet", "+augment/technique@augment.techniques.invert=invert",
                  "augment.techniques.invert.m=1", "augment.techniques.invert.rr=0.5"]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """The example plugin, pip-installed into a private folder (the shared venv stays untouched)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = shutil.copytree(EXAMPLE_PLUGIN, tmp / "src")  # setuptools writes build/ next to the sources
    target = tmp / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
                        "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        pytest.skip(f"cannot build the example plugin offline here: {p.stderr.strip().splitlines()[-1:]}")
    assert (target / "hydra_plugins" / "mfexp_example_plugin" / "__init__.py").is_file()
    assert (target / "mfexp_example_plugin" / "conf" / "model" / "tiny_resnet.yaml").is_file()
    return target


def test_plugin_extends_the_search_path_and_groups(plugin_path, cli):
    env = {"PYTHONPATH": str(plugin_path)}
    p = cli("--info", "searchpath", env=env)
    assert p.returncode == 0 and "pkg://mfexp_example_plugin.conf" in p.stdout, p.stdout + p.stderr
    p = cli("--cfg", "job", *PLUGIN_OPTIONS, env=env)
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["model"]["name"] == "test_resnet"
    assert cfg["augment"]["techniques"]["invert"] == {"_target_": "mfexp_example_plugin.techniques.Invert", "m": 1, "rr": 0.5}
    p = cli("--cfg", "job", "model=tiny_resnet")  # without the plugin the option does not exist
    assert p.returncode == 1 and "tiny_resnet" in p.stderr


def test_plugin_adds_a_report_option(plugin_path, cli):
    """An installed package's conf/report/<name>.yaml is a report the sweeper can call (tests/test_report_plugin.py)."""
    p = cli("--cfg", "job", "report=summary", env={"PYTHONPATH": str(plugin_path)})
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout)["report"] == {"_target_": "mfexp_example_plugin.report.summary_report", "html": False}
    assert (plugin_path / "mfexp_example_plugin" / "report.py").is_file()


def test_plugin_options_train_and_are_tracked(plugin_path, mlflow_store, cli):
    p = cli(*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides, *PLUGIN_OPTIONS, "data.image_size=32", "model.stem=stock",
            env={"PYTHONPATH": str(plugin_path)})
    assert p.returncode == 0, p.stderr[-3000:]
    (r,) = mlflow_store.runs()
    assert r.info.status == "FINISHED"
    assert r.data.params["model.name"] == "test_resnet"
    assert (r.data.params["policy.invert.m"], r.data.params["policy.invert.rr"]) == ("1.0", "0.5")
    assert np.isfinite(r.data.metrics["test_accuracy"])

