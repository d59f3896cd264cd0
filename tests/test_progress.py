"""Progress that suits where output goes (issue 18, item 4): a bar on a terminal, a line per epoch in a file."""
from __future__ import annotations

import io
import logging
import re

import pytest
from conftest import TINY_DEMO, TINY_TRAIN

from mfexp import progress
from mfexp.errors import ConfigError


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("setting, stream, mode", [
    ("auto", _Terminal(), "bar"), ("auto", io.StringIO(), "lines"), (True, io.StringIO(), "lines"),
    (True, _Terminal(), "bar"), ("false", _Terminal(), "lines"), ("False", io.StringIO(), "lines"),
    ("bar", io.StringIO(), "bar"), ("lines", _Terminal(), "lines"), ("off", _Terminal(), "off"),
])
def test_mode_follows_the_setting_and_the_stream(setting, stream, mode):
    assert progress.resolve(setting, stream) == mode


def test_an_unknown_setting_is_a_config_error():
    with pytest.raises(ConfigError, match=r"trainer.progress=sometimes: use auto, bar, lines, off"):
        progress.check("sometimes")


def test_a_terminal_gets_the_animated_bar():
    stream = _Terminal()
    for _ in progress.bar(range(5), "epoch 1/2", "auto", stream=stream):
        pass
    assert "epoch 1/2" in stream.getvalue() and "\r" in stream.getvalue()


def test_lines_mode_writes_a_line_per_interval_and_none_at_the_epochs_end(caplog):
    ticks = iter(range(0, 10_000, 25))  # every batch takes 25 s on this clock
    wrapped = progress.bar(range(10), "epoch 3/15", "lines", interval=60, stream=io.StringIO(), clock=lambda: next(ticks))
    with caplog.at_level(logging.INFO, logger="mfexp"):
        for i in wrapped:
            wrapped.set_postfix(loss=f"{1 / (i + 1):.4f}")
    lines = [r.getMessage() for r in caplog.records]
    # start 0; batch 3 ends at 75 s, batch 6 at 150 s, batch 9 at 225 s; batch 10 ends the epoch: its line is the epoch's
    assert lines == ["epoch 3/15: 3/10, loss 0.3333 (75 s)", "epoch 3/15: 6/10, loss 0.1667 (150 s)",
                     "epoch 3/15: 9/10, loss 0.1111 (225 s)"]


def test_epoch_lines_unless_off(caplog):
    seen = []
    ticks = iter([0.0, 8.25, 16.5])
    call = progress.epoch_lines(lambda e, ms: seen.append(e), "lines", "refit epoch", 2, clock=lambda: next(ticks))
    with caplog.at_level(logging.INFO, logger="mfexp"):
        call(0, {"refit_train_loss": 0.5})
        call(1, {"refit_train_loss": 0.25})
        progress.epoch_lines(lambda e, ms: seen.append(e), "off", "epoch", 1)(0, {"train_loss": 1.0})
    assert [r.getMessage() for r in caplog.records] == ["refit epoch 1/2: refit_train_loss 0.5000 (8.2 s)",
                                                         "refit epoch 2/2: refit_train_loss 0.2500 (8.2 s)"]
    assert seen == [0, 1, 0]  # the caller's callback always runs


def test_bad_setting_fails_before_any_run(mlflow_store, compose_cfg):
    from mfexp.run import run

    with pytest.raises(ConfigError, match="trainer.progress=sometimes"):
        run(compose_cfg(*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides, "trainer.progress=sometimes"))
    assert mlflow_store.runs() == []


def test_redirected_run_writes_a_line_per_epoch_and_the_inspection_verdict(cli, mlflow_store):
    """`python -m mfexp > run.log 2>&1`: no bar refreshes, one line per epoch of the fit and of the refit."""
    settings = [o for o in TINY_TRAIN if not o.startswith("trainer.progress")]
    done = cli(*TINY_DEMO, *settings, *mlflow_store.overrides, "trainer.epochs=3")  # progress: the default, auto
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr  # pipes, not a terminal: what a SLURM log receives
    assert "\r" not in out
    assert len(re.findall(r"\] - epoch \d/3: train_loss [\d.]+, val_loss [\d.]+, val_accuracy [\d.]+ \(", out)) == 3
    assert re.findall(r"\] - refit epoch (\d/\d): refit_train_loss", out) == ["1/3", "2/3", "3/3"]  # last epoch kept
    verdict = [line for line in out.splitlines() if line.startswith("inspection: escapes ")]
    assert len(verdict) == 1 and "false rejects" in verdict[0] and "at threshold" in verdict[0]



@pytest.mark.parametrize("mode", ["bar", "lines", "off"])
def test_the_display_does_not_change_what_is_trained_on(mode):
    """The same seeded DataLoader gives the same batches whatever the progress mode (tqdm.auto's
    constructor iterates what it wraps; a second DataLoader iterator would draw from the generator)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    def batches(setting):
        loader = DataLoader(TensorDataset(torch.arange(40)), batch_size=8, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        return [[b[0].tolist() for b in progress.bar(loader, "epoch", setting, stream=io.StringIO())] for _ in range(2)]

    plain = [[b[0].tolist() for b in DataLoader(TensorDataset(torch.arange(40)), batch_size=8, shuffle=True,
                                                generator=g)] for g in [torch.Generator().manual_seed(0)] for _ in range(2)]
    assert batches(mode) == plain
